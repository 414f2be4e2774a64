-- The outbox: order transitions (accept, ship, cancel…) queued by operators and other programs, pushed to
-- the marketplaces by ordersync's outbox worker in order per order, with retry and a record of every attempt.
--
-- Queuing from another program (the documented SQL path): call
--     select ordersync_enqueue('my-shop', 'ORDER-1', 'ship',
--                              '{"package_id": "77", "company_id": "3", "shipping_code": "TR123"}');
-- or insert into outbox (account_id, order_external_id, kind, args) directly. Either way the row is checked by
-- the worker before anything is sent (validated_at is null): a row that turns out invalid is marked failed
-- with the reason, and nothing is sent for it.

create table outbox (
    id bigint generated always as identity primary key,
    account_id bigint not null references accounts (id),
    order_external_id text not null check (order_external_id <> ''),
    kind text not null check (kind ~ '^[a-z][a-z0-9-]*$'),
    args jsonb not null default '{}' check (jsonb_typeof(args) = 'object'),
    state text not null default 'pending' check (state in (
        'pending', 'running', 'succeeded', 'failed', 'dead', 'cancelled', 'unknown')),
    attempts integer not null default 0 check (attempts >= 0),
    max_attempts integer not null default 10 check (max_attempts between 1 and 1000),
    next_attempt_at timestamptz default now(),
    lease_owner text,
    lease_expires_at timestamptz,
    fence bigint not null default 0 check (fence >= 0),
    idempotency_key text not null unique default gen_random_uuid()::text check (idempotency_key <> ''),
    queued_by text not null default current_user,
    validated_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    finished_at timestamptz,
    last_error text,
    check ((state = 'running') = (lease_owner is not null and lease_expires_at is not null)),
    check (state <> 'pending' or next_attempt_at is not null),
    check (state in ('pending', 'unknown') or next_attempt_at is null),
    check ((state in ('succeeded', 'failed', 'dead', 'cancelled')) = (finished_at is not null))
);
comment on table outbox is 'Order transitions to push to the marketplaces. Within one order they are sent strictly in id order: a transition waits while an earlier one of the same order is not succeeded or cancelled.';
comment on column outbox.order_external_id is 'The marketplace''s identifier of the order (orders.external_id); the order need not be in the database yet.';
comment on column outbox.kind is 'The transition, as the marketplace''s adapter names it (e.g. accept, ship, set-state, reject-item, set-status).';
comment on column outbox.args is 'The transition''s arguments as a JSON object (e.g. {"package_id": "77"}); what each kind requires is in the adapter''s documentation.';
comment on column outbox.state is 'pending: waits for next_attempt_at; running: a worker holds the lease; succeeded; failed: refused or invalid, waits for an operator (retry or cancel); dead: max_attempts exhausted, waits for an operator; cancelled by an operator; unknown: a send ended ambiguously, the worker reads the order back at next_attempt_at (null: the marketplace cannot tell, an operator must decide).';
comment on column outbox.attempts is 'How many times a worker took the transition (each send, and each read-back after an ambiguous send, is one).';
comment on column outbox.max_attempts is 'After this many attempts ending in transient failures the transition is dead.';
comment on column outbox.next_attempt_at is 'When a worker may take it next (pending: send; unknown: read back). Null when nothing is scheduled.';
comment on column outbox.lease_owner is 'The worker (host:pid:nonce) holding the transition while it is running.';
comment on column outbox.lease_expires_at is 'A running transition whose lease expired is taken again (its worker died); its previous send is treated as ambiguous and read back first.';
comment on column outbox.fence is 'Fencing counter, incremented on every claim: a worker records an outcome only while the counter is still the one it claimed with, so a late worker cannot overwrite a newer outcome.';
comment on column outbox.idempotency_key is 'Unique per transition: queuing the same key twice yields the first row. Sent to APIs that support idempotency keys.';
comment on column outbox.queued_by is 'Who queued it: the database role for SQL inserts, "cli:<user>" for ordersync outbox add.';
comment on column outbox.validated_at is 'When ordersync checked the kind, arguments and order state; null for rows inserted by SQL until the worker checks them.';
comment on column outbox.finished_at is 'When it reached succeeded, failed, dead or cancelled.';
comment on column outbox.last_error is 'The latest failure: the marketplace''s own message for refusals, the reason for invalid rows.';
create index outbox_due_idx on outbox (account_id, next_attempt_at) where state in ('pending', 'unknown');
create index outbox_running_idx on outbox (lease_expires_at) where state = 'running';
create index outbox_order_idx on outbox (account_id, order_external_id, id);
-- Operators' views and the metrics count the live states; finished transitions pile up and are skipped.
create index outbox_live_state_idx on outbox (state, created_at)
    where state in ('pending', 'running', 'failed', 'dead', 'unknown');

create table outbox_attempts (
    id bigint generated always as identity primary key,
    outbox_id bigint not null references outbox (id) on delete cascade,
    attempt integer not null check (attempt >= 1),
    fence bigint not null,
    worker text not null,
    action text not null check (action in ('validate', 'send', 'read_back')),
    outcome text not null check (outcome in (
        'succeeded', 'transient', 'rejected', 'unauthorized', 'ambiguous', 'invalid',
        'took_effect', 'not_taken_effect', 'unreadable')),
    request_summary text,
    http_status integer check (http_status between 100 and 599),
    response_excerpt text,
    error text,
    started_at timestamptz not null,
    duration_ms integer not null check (duration_ms >= 0)
);
comment on table outbox_attempts is 'Every attempt at a transition: validation, send or read-back, with what was asked and answered. Never holds a credential.';
comment on column outbox_attempts.attempt is 'outbox.attempts at the time (the claim this attempt belonged to).';
comment on column outbox_attempts.fence is 'The fencing counter of the claim: attempts of a worker that had lost its lease show an older value.';
comment on column outbox_attempts.action is 'validate: a row inserted by SQL checked before its first send; send: the transition sent to the marketplace; read_back: the order read back after an ambiguous send.';
comment on column outbox_attempts.outcome is 'succeeded, transient (retried), rejected (permanent refusal), unauthorized (credentials refused), ambiguous (may or may not have taken effect), invalid (refused by validation), took_effect / not_taken_effect / unreadable (read-back results).';
comment on column outbox_attempts.request_summary is 'Method, path and arguments of the request, without credentials.';
comment on column outbox_attempts.response_excerpt is 'The first characters of the response body (credentials redacted).';
create index outbox_attempts_outbox_idx on outbox_attempts (outbox_id, id);

-- Wakes the workers of the account (LISTEN ordersync_outbox; the payload is the account id) when a
-- transition becomes due now: on insert, on an operator's retry.
create function outbox_notify() returns trigger language plpgsql as $$
begin
    if new.state = 'pending' and new.next_attempt_at <= now() then
        perform pg_notify('ordersync_outbox', new.account_id::text);
    end if;
    return null;
end
$$;
create trigger outbox_notify after insert or update of state, next_attempt_at on outbox
    for each row execute function outbox_notify();

create function ordersync_enqueue(
    account text,
    order_external_id text,
    kind text,
    args jsonb default '{}',
    idempotency_key text default null,
    max_attempts integer default 10
) returns bigint language plpgsql as $$
declare
    account_id bigint;
    queued bigint;
begin
    select a.id into account_id from accounts a where a.name = account and a.removed_at is null;
    if account_id is null then
        raise exception 'no account named % is configured', account using errcode = 'foreign_key_violation';
    end if;
    insert into outbox (account_id, order_external_id, kind, args, idempotency_key, max_attempts)
    values (account_id, order_external_id, kind, coalesce(args, '{}'),
            coalesce(idempotency_key, gen_random_uuid()::text), max_attempts)
    on conflict on constraint outbox_idempotency_key_key do nothing
    returning id into queued;
    if queued is null then
        select o.id into queued from outbox o where o.idempotency_key = ordersync_enqueue.idempotency_key;
    end if;
    return queued;
end
$$;
comment on function ordersync_enqueue(text, text, text, jsonb, text, integer) is 'Queues a transition for another program: account name, order external id, kind, arguments; returns the outbox id (the existing one when the idempotency key was queued before). ordersync checks the row before sending it and marks it failed with the reason when it is invalid.';

create view outbox_stuck as
select o.id, a.name as account, o.order_external_id, o.kind, o.state, o.attempts, o.lease_owner,
       o.lease_expires_at, o.next_attempt_at, o.last_error,
       case
           when o.state = 'running' then 'lease expired: its worker died; another worker will take it again'
           when o.state = 'unknown' and o.next_attempt_at is null then 'outcome unknown: check the order on the marketplace, then retry or cancel'
           else 'due for more than 15 minutes: is a worker running for this account?'
       end as why
from outbox o
join accounts a on a.id = o.account_id
where (o.state = 'running' and o.lease_expires_at < now())
   or (o.state = 'unknown' and o.next_attempt_at is null)
   or (o.state in ('pending', 'unknown') and o.next_attempt_at < now() - interval '15 minutes');
comment on view outbox_stuck is 'Transitions that are not moving: expired leases, unknown outcomes waiting for an operator, due work nobody took.';

create view outbox_failed as
select o.id, a.name as account, o.order_external_id, o.kind, o.args, o.attempts, o.finished_at,
       o.last_error
from outbox o
join accounts a on a.id = o.account_id
where o.state = 'failed';
comment on view outbox_failed is 'Transitions refused by the marketplace or found invalid; they block later transitions of their order until retried or cancelled.';

create view outbox_dead as
select o.id, a.name as account, o.order_external_id, o.kind, o.args, o.attempts, o.max_attempts,
       o.finished_at, o.last_error
from outbox o
join accounts a on a.id = o.account_id
where o.state = 'dead';
comment on view outbox_dead is 'Transitions that exhausted max_attempts on transient failures; they block later transitions of their order until retried or cancelled.';

create view outbox_blocked_orders as
select a.name as account, b.order_external_id, b.id as blocking_id, b.kind as blocking_kind,
       b.state as blocking_state, b.last_error,
       (select count(*) from outbox w
        where w.account_id = b.account_id and w.order_external_id = b.order_external_id
          and w.id > b.id and w.state = 'pending') as waiting
from outbox b
join accounts a on a.id = b.account_id
where b.state in ('failed', 'dead', 'unknown')
  and not exists (
      select 1 from outbox e
      where e.account_id = b.account_id and e.order_external_id = b.order_external_id
        and e.id < b.id and e.state not in ('succeeded', 'cancelled'));
comment on view outbox_blocked_orders is 'Orders whose transitions wait for an operator: the first unfinished transition that is failed, dead or of unknown outcome, and how many later ones wait behind it.';
