-- The expired-lease walk of the claim had an index on running transitions' lease expiry, partial on
-- `state = 'running'`. Every statement that records an outcome or renews a lease names `state = 'running'`
-- too (`where id = $1 and fence = $2 and state = 'running'`), so the planner could answer it from that
-- index, and did whenever its statistics were taken while few transitions ran (a queue just filled, a quiet
-- hour): it then read every running transition to find one row by id (a group commit of 18 successes read
-- all of a worker's 300 claims, and built a hash of them). Keyed on the same expiry but partial on the
-- lease itself (a lease is set exactly while the transition runs, a check constraint of the table), the
-- index serves the walk (`lease_expires_at < now()` implies its predicate) and no outcome statement.
-- Keyed by account first, as the walk and the worker's next-due time ask for one account's leases: other
-- accounts' claims are never read.
create index outbox_lease_idx on outbox (account_id, lease_expires_at) where lease_expires_at is not null;
drop index outbox_running_idx;
