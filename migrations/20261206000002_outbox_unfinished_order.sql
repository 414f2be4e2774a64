-- The claim takes a transition only when no earlier one of its order is unfinished. That probe walked every
-- earlier transition of the order, finished or not, so a claim cost time in proportion to its orders'
-- histories (an order with 100 delivered transitions: 100 rows read per candidate). This index holds only
-- the unfinished transitions, which the probe's condition matches.
create index outbox_unfinished_order_idx on outbox (account_id, order_external_id, id)
    where state not in ('succeeded', 'cancelled');

-- The notification trigger's condition, checked before its function is called: a claim or an outcome
-- (most updates of the table) no longer pays a PL/pgSQL call per row.
drop trigger outbox_notify on outbox;
create trigger outbox_notify after insert or update of state, next_attempt_at on outbox
    for each row when (new.state = 'pending' and new.next_attempt_at <= now())
    execute function outbox_notify();
