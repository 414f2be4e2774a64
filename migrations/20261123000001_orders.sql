-- The core schema: accounts, orders with their lines, packages and history, and the sync bookkeeping
-- (cursors, runs, leases, unknown values, payloads that failed to parse).

create table accounts (
    id bigint generated always as identity primary key,
    name text not null unique check (name ~ '^[a-z0-9_-]+$'),
    marketplace text not null check (marketplace in ('allesgo', 'c2c', 'i1', 'labs', 'gittigidiyor')),
    base_url text not null,
    enabled boolean not null,
    schedule text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    removed_at timestamptz
);
comment on table accounts is 'One shop''s credentials on one marketplace, kept in step with the configuration (credentials themselves are never stored).';
comment on column accounts.name is 'The account name from the configuration; stable identifier for operators.';
comment on column accounts.base_url is 'The API address the account is polled at (never carries credentials).';
comment on column accounts.schedule is 'Cron expression (with seconds) of the account''s poller.';
comment on column accounts.removed_at is 'Set when the account disappeared from the configuration; its orders are kept.';

create table orders (
    id bigint generated always as identity primary key,
    account_id bigint not null references accounts (id),
    external_id text not null,
    order_number text,
    state text not null check (state in (
        'awaiting_payment', 'awaiting_approval', 'approved', 'preparing', 'packaged', 'shipped',
        'delivered', 'completed', 'on_hold', 'cancel_requested', 'cancelled', 'rejected',
        'return_requested', 'returned', 'disputed', 'unknown')),
    status_code text,
    status_text text,
    total_amount numeric,
    shipping_amount numeric,
    currency text check (currency ~ '^[A-Z]{3}$'),
    currency_raw text,
    customer_name text,
    customer_email text,
    shipping_city text,
    placed_at timestamptz,
    source_updated_at timestamptz,
    first_window_from timestamptz,
    first_seen_at timestamptz not null default now(),
    last_changed_at timestamptz not null default now(),
    content_hash bytea not null check (length(content_hash) = 32),
    raw jsonb not null,
    unique (account_id, external_id)
);
comment on table orders is 'Every order of every account, normalized, with the marketplace''s raw payload beside it.';
comment on column orders.external_id is 'The marketplace''s identifier of the order, unique within the account.';
comment on column orders.order_number is 'The order number an operator sees, when it differs from external_id.';
comment on column orders.state is 'Canonical state mapped from the marketplace status (unknown when no mapping exists).';
comment on column orders.status_code is 'The marketplace''s raw status code, as received.';
comment on column orders.status_text is 'The marketplace''s raw status text, as received.';
comment on column orders.currency is 'ISO 4217 code when the raw currency was recognized, else null (see currency_raw).';
comment on column orders.currency_raw is 'The currency exactly as the marketplace sent it.';
comment on column orders.placed_at is 'When the customer placed the order (marketplace time, local times read as Europe/Istanbul).';
comment on column orders.source_updated_at is 'The marketplace''s own last-change time of the order, when the API has one.';
comment on column orders.first_window_from is 'Start of the earliest request window that returned the order: re-reading from here finds it again, whichever date the API''s range filters on.';
comment on column orders.first_seen_at is 'When ordersync first stored the order.';
comment on column orders.last_changed_at is 'When ordersync last stored a different content for the order.';
comment on column orders.content_hash is 'SHA-256 of the normalized order and its raw payload; an unchanged hash means the row is not rewritten.';
comment on column orders.raw is 'The payload as received (for XML APIs, the element converted to JSON), including related resources fetched with it.';
create index orders_account_state_idx on orders (account_id, state);
create index orders_placed_at_idx on orders (account_id, placed_at);

create table order_lines (
    order_id bigint not null references orders (id) on delete cascade,
    external_id text not null,
    position integer not null check (position >= 0),
    package_external_id text,
    sku text,
    product_name text,
    quantity numeric not null,
    unit_price numeric,
    total_price numeric,
    currency text check (currency ~ '^[A-Z]{3}$'),
    currency_raw text,
    state text not null,
    status_code text,
    status_text text,
    raw jsonb not null,
    primary key (order_id, external_id)
);
comment on table order_lines is 'The lines (items) of each order, replaced whole whenever the order''s content changes.';
comment on column order_lines.external_id is 'The marketplace''s line identifier, or the line''s position when it has none.';
comment on column order_lines.package_external_id is 'The package the line ships in, for marketplaces with packages.';

create table order_packages (
    order_id bigint not null references orders (id) on delete cascade,
    external_id text not null,
    state text not null,
    status_code text,
    status_text text,
    carrier text,
    tracking_number text,
    total_amount numeric,
    raw jsonb not null,
    primary key (order_id, external_id)
);
comment on table order_packages is 'Packages (shipments) of orders, for marketplaces that group lines into packages.';

create table order_state_changes (
    id bigint generated always as identity primary key,
    order_id bigint not null references orders (id) on delete cascade,
    from_state text not null,
    to_state text not null,
    from_status_code text,
    from_status_text text,
    to_status_code text,
    to_status_text text,
    observed_at timestamptz not null default now()
);
comment on table order_state_changes is 'History: one row each time a stored order''s canonical state or raw status changed.';
comment on column order_state_changes.observed_at is 'When ordersync saw the change (not when it happened on the marketplace).';
create index order_state_changes_order_idx on order_state_changes (order_id, observed_at);

create table sync_cursors (
    account_id bigint not null references accounts (id),
    stream text not null,
    value timestamptz not null,
    updated_at timestamptz not null default now(),
    primary key (account_id, stream)
);
comment on table sync_cursors is 'Per account and stream: every change before value is committed to the database. Only moves forward.';

create function sync_cursors_forward_only() returns trigger language plpgsql as $$
begin
    if new.value < old.value then
        raise exception 'cursor of account % stream % may not move back from % to %',
            old.account_id, old.stream, old.value, new.value
            using errcode = 'check_violation';
    end if;
    return new;
end
$$;
create trigger sync_cursors_forward_only before update on sync_cursors
    for each row execute function sync_cursors_forward_only();

create table sync_runs (
    id bigint generated always as identity primary key,
    account_id bigint not null references accounts (id),
    stream text not null,
    holder text not null,
    replay boolean not null default false,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    window_from timestamptz,
    window_to timestamptz,
    pages integer not null default 0,
    requests integer not null default 0,
    seen integer not null default 0,
    inserted integer not null default 0,
    updated integer not null default 0,
    unchanged integer not null default 0,
    outcome text not null default 'running' check (outcome in ('running', 'succeeded', 'failed', 'interrupted')),
    error text,
    check ((outcome = 'running') = (finished_at is null))
);
comment on table sync_runs is 'One row per poll of an account''s stream, with what it covered and what it did.';
comment on column sync_runs.holder is 'The replica (host:pid:uuid) that ran it.';
comment on column sync_runs.replay is 'A replay of a past window (ordersync sync --since/--until): it does not move the cursor.';
comment on column sync_runs.window_from is 'Start of the planned range (cursor minus overlap, or the backfill start).';
comment on column sync_runs.window_to is 'The frozen upper bound of the run.';
comment on column sync_runs.seen is 'Orders received from the marketplace (an order in two pages counts twice).';
comment on column sync_runs.unchanged is 'Orders received whose content had not changed; not rewritten.';
create index sync_runs_account_stream_idx on sync_runs (account_id, stream, started_at desc);

create table sync_leases (
    account_id bigint not null references accounts (id),
    stream text not null,
    holder text not null,
    acquired_at timestamptz not null default now(),
    expires_at timestamptz not null,
    primary key (account_id, stream)
);
comment on table sync_leases is 'Which replica polls an account''s stream right now; a lease past expires_at is free (its holder died).';

create table unknown_values (
    marketplace text not null,
    field text not null,
    value text not null,
    occurrences bigint not null default 0,
    first_seen_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    primary key (marketplace, field, value)
);
comment on table unknown_values is 'Statuses and currencies a marketplace sent that have no mapping yet (stored raw, mapped to unknown).';
comment on column unknown_values.occurrences is 'How many order writes carried the value.';

create table payload_errors (
    id bigint generated always as identity primary key,
    account_id bigint not null references accounts (id),
    stream text not null,
    run_id bigint references sync_runs (id),
    request text not null,
    error text not null,
    raw_body text not null,
    recorded_at timestamptz not null default now()
);
comment on table payload_errors is 'Responses that could not be parsed, with the body as received (credentials redacted), for an operator to inspect.';
comment on column payload_errors.request is 'A description of the request (no credentials).';

create table marketplace_status_codes (
    marketplace text not null,
    code text not null,
    description text not null,
    fetched_at timestamptz not null default now(),
    primary key (marketplace, code)
);
comment on table marketplace_status_codes is 'Status catalogues published by marketplace APIs (allesgo), refreshed at start-up and daily.';

create view sync_status as
select a.name as account,
       a.marketplace,
       c.stream,
       c.value as cursor,
       now() - c.value as lag,
       last_ok.finished_at as last_success_at,
       last_run.outcome as last_outcome,
       last_run.finished_at as last_run_at,
       last_fail.error as last_error,
       last_fail.finished_at as last_error_at
from accounts a
join sync_cursors c on c.account_id = a.id
left join lateral (
    select r.finished_at from sync_runs r
    where r.account_id = a.id and r.stream = c.stream and r.outcome = 'succeeded' and not r.replay
    order by r.started_at desc limit 1) last_ok on true
left join lateral (
    select r.outcome, r.finished_at from sync_runs r
    where r.account_id = a.id and r.stream = c.stream
    order by r.started_at desc limit 1) last_run on true
left join lateral (
    select r.error, r.finished_at from sync_runs r
    where r.account_id = a.id and r.stream = c.stream and r.outcome = 'failed'
    order by r.started_at desc limit 1) last_fail on true;
comment on view sync_status is 'Per account and stream: cursor, lag behind now, last successful run, last error.';

create view order_overview as
select a.name as account,
       a.marketplace,
       o.external_id,
       o.order_number,
       o.state,
       coalesce(o.status_text, o.status_code) as marketplace_status,
       o.total_amount,
       coalesce(o.currency, o.currency_raw) as currency,
       o.customer_name,
       o.shipping_city,
       o.placed_at,
       o.source_updated_at,
       o.last_changed_at,
       (select count(*) from order_lines l where l.order_id = o.id) as lines
from orders o
join accounts a on a.id = o.account_id;
comment on view order_overview is 'One readable row per order, for psql and BI tools.';
