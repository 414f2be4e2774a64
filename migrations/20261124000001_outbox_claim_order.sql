-- The claim query walks due transitions in (next_attempt_at, id) order and stops at its limit; with this
-- index that walk is an index scan instead of a sort of every due row (which made each claim cost time
-- in proportion to the queue's length).
create index outbox_due_order_idx on outbox (account_id, next_attempt_at, id)
    where state in ('pending', 'unknown');
-- Its leading columns serve every query the older index served.
drop index outbox_due_idx;
