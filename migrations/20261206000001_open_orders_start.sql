-- A stream that re-reads open orders starts at the earliest placement time (or first window) of the
-- account's orders that are not final. With this index that is one short index probe per open state
-- instead of reading every open order's row (100 ms for 30,000 open orders, most of a quiet run).
create index orders_account_state_start_idx on orders (account_id, state, (least(placed_at, first_window_from)));
-- Its leading columns serve every query the older index served.
drop index orders_account_state_idx;
