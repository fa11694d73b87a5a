"""The audit log's tables and its append function, in versioned steps (run by
exchange.servers.migrations): step N is version N. Never edit, reorder or remove a released
step; a change is a new step at the end."""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq bigint PRIMARY KEY, recorded_at timestamptz NOT NULL, patient_id uuid, person text,
    institution text, action text NOT NULL, decision text, purpose text,
    break_glass boolean NOT NULL DEFAULT false, record_text text NOT NULL,
    leaf_hash bytea NOT NULL, chain_hash bytea NOT NULL);
-- A read's record lists every resource it disclosed (kilobytes of ids that compress well but
-- cost CPU to compress on every read): stored as it is.
ALTER TABLE audit_log ALTER COLUMN record_text SET STORAGE EXTERNAL;
CREATE INDEX IF NOT EXISTS audit_log_patient ON audit_log (patient_id, seq);
CREATE INDEX IF NOT EXISTS audit_log_person ON audit_log (person, recorded_at);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (recorded_at);
CREATE TABLE IF NOT EXISTS audit_nodes (
    level smallint NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS audit_tree (
    id int PRIMARY KEY CHECK (id = 1), size bigint NOT NULL, frontier bytea[] NOT NULL,
    chain_head bytea NOT NULL);
INSERT INTO audit_tree VALUES (1, 0, '{}', '\\x0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS audit_heads (
    size bigint PRIMARY KEY, root bytea NOT NULL, note text NOT NULL,
    signed_at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
"""
_PROTECTED = ("audit_log", "audit_nodes", "audit_heads")

# One round trip per append: the caller computes the leaves, nodes and new frontier from the
# tree state it last saw; the function takes the lock, checks that the tree is still that size
# (another process may have appended), writes everything and commits with the call. False:
# the tree moved on; the caller reloads the state and computes again.
_APPEND_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_append(
    expected bigint, seqs bigint[], ats timestamptz[], patients uuid[], persons text[],
    institutions text[], actions text[], decisions text[], purposes text[], glass boolean[],
    texts text[], leaves bytea[], chains bytea[], levels smallint[], idxs bigint[],
    hashes bytea[], new_size bigint, new_frontier bytea[], new_chain bytea)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('hie-audit-append'));
    IF (SELECT size FROM audit_tree WHERE id = 1 FOR UPDATE) <> expected THEN
        RETURN false;
    END IF;
    INSERT INTO audit_log (seq, recorded_at, patient_id, person, institution, action,
                           decision, purpose, break_glass, record_text, leaf_hash, chain_hash)
        SELECT * FROM unnest(seqs, ats, patients, persons, institutions, actions, decisions,
                             purposes, glass, texts, leaves, chains);
    INSERT INTO audit_nodes (level, idx, hash) SELECT * FROM unnest(levels, idxs, hashes);
    UPDATE audit_tree SET size = new_size, frontier = new_frontier, chain_head = new_chain
        WHERE id = 1;
    RETURN true;
END $$;
"""


def _triggers(tables: tuple[str, ...] = _PROTECTED) -> str:
    out = []
    for table in tables:
        out.append(f"""
DROP TRIGGER IF EXISTS {table}_no_change ON {table};
CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();""")
    return "".join(out)


# Step 3: the size alone does not say the caller computed on the tree as it stands (an append
# computed on one that was refused would find the size it expected): the batch's first chain
# link must also extend the stored chain head, or nothing is written (false: compute again).
_APPEND_CHAINED = _APPEND_FUNCTION.replace(
    """    IF (SELECT size FROM audit_tree WHERE id = 1 FOR UPDATE) <> expected THEN
        RETURN false;
    END IF;""",
    """    IF (SELECT size FROM audit_tree WHERE id = 1 FOR UPDATE) <> expected
       OR sha256((SELECT chain_head FROM audit_tree WHERE id = 1)
                 || convert_to(texts[1], 'UTF8')) <> chains[1] THEN
        RETURN false;
    END IF;""",
)

# Step 4: a read that touched several patients (a referral inbox, a ServiceRequest search) is
# found by each of them: "who accessed my record" and a breach's scope must not miss it. One
# row per (patient, record) in an append-only table; a record of one patient names it in
# audit_log.patient_id as before. The append function takes the pairs as two more arrays.
_OLD_SIGNATURE = (
    "bigint, bigint[], timestamptz[], uuid[], text[], text[], text[], text[], text[], "
    "boolean[], text[], bytea[], bytea[], smallint[], bigint[], bytea[], bigint, bytea[], bytea"
)
_PATIENTS = (
    """
CREATE TABLE IF NOT EXISTS audit_patients (
    patient_id uuid NOT NULL, seq bigint NOT NULL, PRIMARY KEY (patient_id, seq));
COMMENT ON TABLE audit_patients IS 'Each patient of an audit record that touched several (one
row per patient and record), append-only; a record of one patient names it in
audit_log.patient_id.';
"""
    + _triggers(("audit_patients",))
    + f"DROP FUNCTION IF EXISTS audit_append({_OLD_SIGNATURE});\n"
    + _APPEND_CHAINED.replace(
        "new_size bigint, new_frontier bytea[], new_chain bytea)",
        "new_size bigint, new_frontier bytea[], new_chain bytea, link_patients uuid[], "
        "link_seqs bigint[])",
    ).replace(
        "    UPDATE audit_tree SET",
        "    INSERT INTO audit_patients (patient_id, seq) "
        "SELECT * FROM unnest(link_patients, link_seqs);\n    UPDATE audit_tree SET",
    )
)

# Step 6: the same append, its per-record values sent packed: the canonical texts as one text
# (one record per line: canonical JSON holds no raw line break), the leaf, chain and node hashes
# each as one bytea of 32-byte hashes, the seqs counted from ``expected``. Encoding an array
# element by element cost the writer more than computing the records' hashes.
_SIGNATURE = f"{_OLD_SIGNATURE}, uuid[], bigint[]"
_APPEND_PACKED = f"""
DROP FUNCTION IF EXISTS audit_append({_SIGNATURE});
CREATE FUNCTION audit_append(
    expected bigint, ats timestamptz[], patients uuid[], persons text[], institutions text[],
    actions text[], decisions text[], purposes text[], glass boolean[], texts text,
    leaves bytea, chains bytea, levels smallint[], idxs bigint[], hashes bytea,
    new_size bigint, new_frontier bytea[], new_chain bytea, link_patients uuid[],
    link_seqs bigint[])
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    lines text[] := string_to_array(texts, E'\\n');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('hie-audit-append'));
    IF cardinality(lines) <> cardinality(ats) OR length(leaves) <> 32 * cardinality(ats)
       OR length(chains) <> 32 * cardinality(ats) OR length(hashes) <> 32 * cardinality(levels)
       OR new_size <> expected + cardinality(ats) THEN
        RAISE EXCEPTION 'audit_append: the packed values do not match the records';
    END IF;
    IF (SELECT size FROM audit_tree WHERE id = 1 FOR UPDATE) <> expected
       OR sha256((SELECT chain_head FROM audit_tree WHERE id = 1)
                 || convert_to(lines[1], 'UTF8')) <> substring(chains FROM 1 FOR 32) THEN
        RETURN false;
    END IF;
    INSERT INTO audit_log (seq, recorded_at, patient_id, person, institution, action,
                           decision, purpose, break_glass, record_text, leaf_hash, chain_hash)
        SELECT expected + r.i - 1, r.at, r.patient, r.person, r.institution, r.action,
               r.decision, r.purpose, r.glass, r.line,
               substring(leaves FROM 32 * r.i::int - 31 FOR 32),
               substring(chains FROM 32 * r.i::int - 31 FOR 32)
        FROM unnest(ats, patients, persons, institutions, actions, decisions, purposes, glass,
                    lines) WITH ORDINALITY
             AS r(at, patient, person, institution, action, decision, purpose, glass, line, i);
    INSERT INTO audit_nodes (level, idx, hash)
        SELECT n.level, n.idx, substring(hashes FROM 32 * n.j::int - 31 FOR 32)
        FROM unnest(levels, idxs) WITH ORDINALITY AS n(level, idx, j);
    INSERT INTO audit_patients (patient_id, seq) SELECT * FROM unnest(link_patients, link_seqs);
    UPDATE audit_tree SET size = new_size, frontier = new_frontier, chain_head = new_chain
        WHERE id = 1;
    RETURN true;
END $$;
"""

_COMMENTS = """
COMMENT ON TABLE audit_log IS 'The audit log, one row per record, append-only (triggers refuse
UPDATE, DELETE and TRUNCATE): leaf_hash is its RFC 9162 leaf, chain_hash links it to the row
before. Check with hie audit verify.';
COMMENT ON TABLE audit_nodes IS 'Every complete Merkle subtree hash of audit_log by (level,
idx), append-only: proofs are a few lookups.';
COMMENT ON TABLE audit_tree IS 'One row: the tree size, its right edge (frontier) and the hash
chain head, moved only by audit_append().';
COMMENT ON TABLE audit_heads IS 'Signed tree heads (C2SP tlog-checkpoint notes), append-only;
each extends the one before.';
"""

# Step 7: the hash the log is made with, recorded in the log itself: ``sha256`` (the intl crypto
# profile) or ``sm3`` (gm), never changed once set (a trigger refuses it). A log that already
# holds records was made with SHA-256 and says so now; an empty one takes the hash of its
# exchange's profile when the exchange first starts on it (audit.postgres.record_hash), or its
# first append's. The append names the hash it computed with and is refused (SQLSTATE HA001,
# nothing written) on a log of the other; it names the chain head it built on, compared as it
# is rather than recomputed here, since PostgreSQL has no SM3.
_STEP6_SIGNATURE = (
    "bigint, timestamptz[], uuid[], text[], text[], text[], text[], text[], boolean[], text, "
    "bytea, bytea, smallint[], bigint[], bytea, bigint, bytea[], bytea, uuid[], bigint[]"
)
_HASHED = f"""
ALTER TABLE audit_tree ADD COLUMN hash text CHECK (hash IN ('sha256', 'sm3'));
UPDATE audit_tree SET hash = 'sha256' WHERE size > 0;
COMMENT ON COLUMN audit_tree.hash IS 'The hash the log is made with (sha256: the intl crypto
profile, sm3: gm), set once: leaves, nodes, chain links and signed heads all use it.';
CREATE FUNCTION audit_hash_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.hash IS NOT NULL AND NEW.hash IS DISTINCT FROM OLD.hash THEN
        RAISE EXCEPTION 'the audit log is hashed with %, and that never changes', OLD.hash;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_tree_hash_fixed BEFORE UPDATE ON audit_tree
    FOR EACH ROW EXECUTE FUNCTION audit_hash_fixed();
DROP FUNCTION audit_append({_STEP6_SIGNATURE});
CREATE FUNCTION audit_append(
    expected bigint, ats timestamptz[], patients uuid[], persons text[], institutions text[],
    actions text[], decisions text[], purposes text[], glass boolean[], texts text,
    leaves bytea, chains bytea, levels smallint[], idxs bigint[], hashes bytea,
    new_size bigint, new_frontier bytea[], new_chain bytea, link_patients uuid[],
    link_seqs bigint[], previous_chain bytea, tree_hash text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    lines text[] := string_to_array(texts, E'\\n');
    tree_size bigint;
    head bytea;
    recorded text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('hie-audit-append'));
    IF cardinality(lines) <> cardinality(ats) OR length(leaves) <> 32 * cardinality(ats)
       OR length(chains) <> 32 * cardinality(ats) OR length(hashes) <> 32 * cardinality(levels)
       OR new_size <> expected + cardinality(ats) THEN
        RAISE EXCEPTION 'audit_append: the packed values do not match the records';
    END IF;
    SELECT size, chain_head, hash INTO tree_size, head, recorded FROM audit_tree WHERE id = 1
        FOR UPDATE;
    IF recorded IS DISTINCT FROM tree_hash AND NOT (recorded IS NULL AND tree_size = 0) THEN
        RAISE EXCEPTION 'audit_append: the audit log is hashed with %, the append with %',
            coalesce(recorded, 'no recorded hash'), tree_hash USING ERRCODE = 'HA001';
    END IF;
    IF tree_size <> expected OR head <> previous_chain THEN
        RETURN false;
    END IF;
    INSERT INTO audit_log (seq, recorded_at, patient_id, person, institution, action,
                           decision, purpose, break_glass, record_text, leaf_hash, chain_hash)
        SELECT expected + r.i - 1, r.at, r.patient, r.person, r.institution, r.action,
               r.decision, r.purpose, r.glass, r.line,
               substring(leaves FROM 32 * r.i::int - 31 FOR 32),
               substring(chains FROM 32 * r.i::int - 31 FOR 32)
        FROM unnest(ats, patients, persons, institutions, actions, decisions, purposes, glass,
                    lines) WITH ORDINALITY
             AS r(at, patient, person, institution, action, decision, purpose, glass, line, i);
    INSERT INTO audit_nodes (level, idx, hash)
        SELECT n.level, n.idx, substring(hashes FROM 32 * n.j::int - 31 FOR 32)
        FROM unnest(levels, idxs) WITH ORDINALITY AS n(level, idx, j);
    INSERT INTO audit_patients (patient_id, seq) SELECT * FROM unnest(link_patients, link_seqs);
    UPDATE audit_tree SET size = new_size, frontier = new_frontier, chain_head = new_chain,
        hash = tree_hash WHERE id = 1;
    RETURN true;
END $$;
"""

# From this step on an append stores the complete nodes of level 4 and above only
# (audit.postgres.STORED_FROM); a proof computes a lower one from the leaf hashes under it.
_NODES_FROM_LEVEL_4 = """
COMMENT ON TABLE audit_nodes IS 'Complete Merkle subtree hashes of audit_log by (level, idx),
append-only: proofs are a few lookups. Appends store the levels from 4 up (a log written before
schema version 8 holds the lower ones too, unread); a proof computes a node below level 4 from
the leaf hashes of audit_log under it.';
"""

# Step 9: the append writes its rows before it takes the lock that orders the appends, and holds
# the lock only to check the tree and move it: the next append's rows go in while the one
# before it commits, and the appends' serial part is the tree's row and the commit. A refused
# append (the tree moved on, or its rows are already there: another writer's append of the
# same places) is undone with the block it ran in, so it still writes nothing. Writers append
# in seq order, so two that overlap wait on each other's index entries in one direction only.
_LOCK = "    PERFORM pg_advisory_xact_lock(hashtext('hie-audit-append'));\n"
_STEP7_FUNCTION = _HASHED[_HASHED.index("CREATE FUNCTION audit_append(") :]
_CHECK_AT = _STEP7_FUNCTION.index("    SELECT size, chain_head")
_STEP7_CHECK = _STEP7_FUNCTION[_CHECK_AT : _STEP7_FUNCTION.index("    INSERT INTO audit_log")]
_MOVED_ON = "RAISE EXCEPTION 'audit_append: the tree moved on' USING ERRCODE = 'HA002';"
_CHECK_AFTER_ROWS = _LOCK + _STEP7_CHECK.replace("RETURN false;", _MOVED_ON)
_REFUSED = (
    "    EXCEPTION WHEN SQLSTATE 'HA002' OR unique_violation OR deadlock_detected THEN\n"
    "        RETURN false;\n    END;\n"
)
_APPEND_BEFORE_LOCK = "CREATE OR REPLACE " + (
    _STEP7_FUNCTION.removeprefix("CREATE ")
    .replace(_LOCK, "")
    .replace(_STEP7_CHECK, "    BEGIN\n")
    .replace("    UPDATE audit_tree SET", _CHECK_AFTER_ROWS + "    UPDATE audit_tree SET")
    .replace("    RETURN true;", _REFUSED + "    RETURN true;")
)

# The schema in versioned steps (exchange.servers.migrations runs them): step N is version N.
# Never edit, reorder or remove a released step; a change is a new step at the end.
BASELINE_TABLES = ("audit_log", "audit_nodes", "audit_tree", "audit_heads")
MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "baseline: log, Merkle nodes, tree, signed heads, append-only triggers, append function",
        SCHEMA + _triggers() + _APPEND_FUNCTION,
    ),
    ("comments on what each audit table holds", _COMMENTS),
    ("the append also checks that its batch extends the stored chain head", _APPEND_CHAINED),
    ("every patient of a record that touched several, indexed (audit_patients)", _PATIENTS),
    (
        "the append runs with its owner's rights: the application role only reads the log",
        f"ALTER FUNCTION audit_append({_OLD_SIGNATURE}, uuid[], bigint[]) SECURITY DEFINER "
        "SET search_path = public, pg_temp;",
    ),
    (
        "the append takes each record's text and hashes packed, not one array element each",
        _APPEND_PACKED,
    ),
    (
        "the log records the hash it is made with (sha256 or sm3); an append names its hash "
        "and the chain head it built on",
        _HASHED,
    ),
    (
        "audit_nodes says what it holds: appends store the nodes from level 4 up",
        _NODES_FROM_LEVEL_4,
    ),
    (
        "the append writes its rows before it takes the lock, which it holds only to check "
        "and move the tree",
        _APPEND_BEFORE_LOCK,
    ),
)
