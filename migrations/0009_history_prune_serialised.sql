-- Concurrent inserts for one key (a run-now beside a cycle, two replicas during a rebalance) could each
-- prune from their own snapshot and leave 97 rows. The pruner now takes a transaction-level advisory
-- lock first; under READ COMMITTED its DELETE then sees the other transaction's committed rows.
CREATE OR REPLACE FUNCTION public.health_check_history_prune() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    -- One pruner at a time: two transactions inserting for the same key at once would otherwise each
    -- count only their own new row and leave 97. A transaction-level lock (held to commit, which for the
    -- service is the end of its one persist statement); a lock per key would exhaust the lock table at
    -- 10,000 keys per batch.
    PERFORM pg_advisory_xact_lock(1635147105);
    -- First the cutoff per key (its 96th newest slot, read backwards from the unique index: ~96 index
    -- entries per key), materialised so it is computed once per key; then the older rows of each key
    -- are deleted by index range. Never a scan of the whole table, never a DELETE per row.
    WITH cutoff AS MATERIALIZED (
        SELECT k.org_id, k.integration_type, (
            SELECT x.slot FROM health_check_history x
            WHERE x.org_id = k.org_id AND x.integration_type = k.integration_type
            ORDER BY x.slot DESC
            OFFSET 95 LIMIT 1) AS slot
        FROM (SELECT DISTINCT org_id, integration_type FROM inserted) k
    )
    DELETE FROM health_check_history h
    USING cutoff c
    WHERE c.slot IS NOT NULL
      AND h.org_id = c.org_id
      AND h.integration_type = c.integration_type
      AND h.slot < c.slot;
    RETURN NULL;
END
$$;
