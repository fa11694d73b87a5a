-- county-hie: autovacuum for the tables that grow fast, set per table (storage parameters,
-- kept in the catalog and so replicated to the standby with everything else).
--
-- Run on the PRIMARY as a superuser (or the owner role, which may alter the read models as a
-- member of the application role), after the first `hie up` has made the tables; it is safe to
-- run again, and should be after an upgrade whose notes say the read models were made again
-- (a new table starts with the defaults):
--     psql "host=10.0.0.21 dbname=hie user=postgres sslmode=verify-full sslrootcert=…" -f autovacuum.sql
--
-- Why: the defaults vacuum a table when a fifth of it has changed (scale factor 0.2). Most of
-- the exchange's big tables only ever grow (the ledger and the audit log refuse UPDATE and
-- DELETE), so for them "changed" means "inserted", and at 0.2 a 50-million-row table waits
-- for 10 million inserts, then vacuums them all at once, and its pages are not marked
-- all-visible meanwhile (index-only scans read the heap) nor frozen (the anti-wraparound
-- vacuum that comes later reads the whole table at a bad moment). Small, frequent vacuums of
-- what is new cost little: vacuum skips the pages the visibility map says are done.
-- ANALYZE likewise at 2% rather than 10%, so plans follow the tables as they grow.

-- The ledger: append-only (the application role may not delete; eventsourcing never updates).
-- Each append holds the events table's EXCLUSIVE lock, which a VACUUM or ANALYZE of it holds
-- off while it runs: the exchange itself sets autovacuum_vacuum_cost_delay = 0 and
-- autovacuum_freeze_min_age = 0 on ledger_events at each start (exchange/ingest/recorder.py),
-- so that its vacuums are short and the anti-wraparound one finds little left to do.
-- Its events' state is stored out of line (TOAST, STORAGE EXTERNAL: compressed and encrypted
-- already), so the TOAST table is the biggest part and gets the same.
ALTER TABLE IF EXISTS ledger_events SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_analyze_scale_factor = 0.02,
    toast.autovacuum_vacuum_insert_scale_factor = 0.01,
    toast.autovacuum_vacuum_insert_threshold = 100000
);
-- One row per submitted item (the ledger's refusal of a source record twice) and the
-- regional identifier index: append-only, as large as the clinical record.
ALTER TABLE IF EXISTS ledger_source_records SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE IF EXISTS ledger_identifiers SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_analyze_scale_factor = 0.02
);

-- The audit log: a record per read decision, submission, token and admin action; append-only
-- (triggers refuse UPDATE, DELETE, TRUNCATE). Its Merkle nodes and patient index grow with it.
ALTER TABLE IF EXISTS audit_log SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE IF EXISTS audit_nodes SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 100000
);
ALTER TABLE IF EXISTS audit_patients SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_analyze_scale_factor = 0.02
);

-- The record's entries: one row per version of each clinical entry. Inserted mostly; an
-- amendment or a retraction UPDATEs the old version's valid_to. valid_to is in no index, so
-- with room left in the page the update is HOT (no index entries, the old version pruned
-- in place): fillfactor 90 leaves that room (it applies to pages written from now on). Dead
-- versions are vacuumed at 2% rather than 20%, for the lookups by patient the gate makes on
-- every read.
ALTER TABLE IF EXISTS record_entries SET (
    fillfactor = 90,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_analyze_scale_factor = 0.02
);
-- The ledger's clock (a row per ledger position, for "as it stood at" reads) and the referral
-- and merge-request histories: append-only read models.
ALTER TABLE IF EXISTS ledger_clock SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 100000,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE IF EXISTS referral_events SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);
-- Patients and their identifiers: a row per person, updated on a merge, an unmerge or new
-- demographics; identifiers are looked up on every MPI query.
ALTER TABLE IF EXISTS patients SET (
    fillfactor = 90,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE IF EXISTS patient_identifiers SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);

-- Left at the defaults, on purpose: audit_tree and projection_position are one row each,
-- updated at every audit flush and every projection batch. The default threshold (50 dead
-- rows) already vacuums them within autovacuum's minute, and HOT pruning keeps them to a
-- page or two between runs; a lower threshold would only vacuum them more often than the
-- launcher wakes.
