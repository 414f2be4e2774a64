-- A worker no longer looks again and again at a transition that was due but waited for an earlier,
-- failed one of its order: it sleeps until something changes. An operator's retry of the failed one
-- notifies (it becomes pending and due); cancelling it lets the later ones run, so it notifies too.
create or replace function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('ordersync_outbox', new.account_id::text);
    return null;
end
$$;
drop trigger outbox_notify on outbox;
create trigger outbox_notify after insert or update of state, next_attempt_at on outbox
    for each row when ((new.state = 'pending' and new.next_attempt_at <= now()) or new.state = 'cancelled')
    execute function outbox_notify();
