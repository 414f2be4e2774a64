-- A claim sends once, so it has one successful send at most. The group commit of successes is run again
-- after a failure that may have committed (or may still be committing); this index keeps that second run
-- from writing the attempt twice (`on conflict do nothing` waits for a first run still under way, then
-- skips the row it wrote). No code before this index wrote two (a claim's send is recorded once), so it
-- builds on any history; the build holds writes of attempts back for as long as it reads the table.
create unique index outbox_attempts_one_success_idx on outbox_attempts (outbox_id, fence)
    where action = 'send' and outcome = 'succeeded';
