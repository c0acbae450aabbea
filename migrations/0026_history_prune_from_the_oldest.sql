-- The counted prune of 0023, per key: an upsert of its counter row (a speculative insert, then the update) and
-- a read of its index range from the start, to the rows to delete. That start holds the entries of the rows
-- earlier prunes deleted until a vacuum passes (autovacuum's default waits for 20 % of the table: ~19 cycles),
-- each one fetched from the heap, and marked dead with a write to an old index page, by the next lookup.
-- At 100,000 integrations the prune was 2.2 s of a 4.7 s persist statement (EXPLAIN (ANALYZE, BUFFERS, WAL),
-- two cycles after a VACUUM: counter upsert 0.75 s, lookups 1.25 s, deletes 0.13 s).
--
-- Now each counter row also keeps `oldest`: no row of the key is older (a lower bound; NULL when unknown).
-- One index descent per key reads its first rows from there: those to delete, and the next one, its new
-- oldest slot. The dead entries of earlier prunes lie below it and are never visited; the rows go by a TID
-- scan in heap order; the counter rows are updated by difference in one plain UPDATE (new keys inserted).
--
-- The rule and the count's hazards are those of 0023 (each key keeps its latest 96 rows; at most 4 rows deleted
-- per row inserted; a count too high deletes from the newest 96 for good), with one less: a key whose rows run
-- out before the slot the count says loses none of them. `oldest` adds none: a delete of other rows leaves it
-- a valid lower bound (a lookup then passes the deleted entries once), an insert through the trigger lowers
-- it, and only rows added with triggers off can sit below it, where they are kept (never deleted in place of
-- newer ones: the doomed rows are the ones just above it). After loading, deleting or restoring history with
-- triggers off, recount, now with the oldest slot:
--   INSERT INTO public.health_check_history_count (org_id, integration_type, row_count, oldest)
--   SELECT org_id, integration_type, count(*), min(slot) FROM public.health_check_history GROUP BY 1, 2
--   ON CONFLICT (org_id, integration_type) DO UPDATE SET row_count = EXCLUDED.row_count, oldest = EXCLUDED.oldest;
-- The migration fills `oldest` with one pass over the history (its index: seconds for 9.6 M rows).

ALTER TABLE public.health_check_history_count ADD COLUMN oldest timestamptz;  -- no row of the key is older
ALTER TABLE public.health_check_history_count DROP COLUMN pruned;  -- the prune's own bookkeeping, now in its statement

UPDATE public.health_check_history_count c SET oldest = h.oldest
FROM (SELECT org_id, integration_type, min(slot) AS oldest FROM public.health_check_history GROUP BY 1, 2) h
WHERE c.org_id = h.org_id AND c.integration_type = h.integration_type;

CREATE OR REPLACE FUNCTION public.health_check_history_prune() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET work_mem = '32MB'  -- a cycle's keys (100,000: ~10 MB) aggregated and sorted in memory, not on disk
SET enable_seqscan = off  -- never a scan of the whole history (a hash join for the delete, chosen on estimates)
AS $$
BEGIN
    -- One pruner at a time (0009): a second transaction inserting for the same key waits here, then
    -- counts and deletes with the first one's rows committed. It also orders the counter rows' locks.
    PERFORM pg_advisory_xact_lock(1635147105);
    -- The deletes below are counted here, in the one counter update per key; the DELETE trigger, which
    -- counts every other delete, leaves them alone.
    PERFORM set_config('integration_health.pruning', 'on', true);
    -- Per key: n rows added from slot `first`, and the excess over 96 to delete (at most 4 per row added). One
    -- index descent per key with an excess reads its first excess + 1 rows from its lower bound (the slot it
    -- had, or the first new one when older; from its start when unknown): the first `excess` are deleted, the
    -- next is its new oldest. Should its rows end before that (a count too high), none are deleted. Then one
    -- counter update per key (new keys: a row as it will be after this prune), by difference, so a delete
    -- counted meanwhile by the DELETE trigger is not lost.
    WITH added AS (
        SELECT org_id, integration_type, count(*)::integer AS n, min(slot) AS first FROM inserted GROUP BY 1, 2
    ), held AS MATERIALIZED (  -- bound: no row of the key is older (NULL: unknown)
        SELECT a.org_id, a.integration_type, a.n,
               health_check_history_excess(coalesce(c.row_count, 0) + a.n, a.n) AS excess,
               c.row_count IS NULL AS new,
               CASE WHEN c.row_count IS NULL THEN a.first WHEN c.oldest IS NOT NULL THEN least(c.oldest, a.first) END
                   AS bound
        FROM added a
        LEFT JOIN health_check_history_count c USING (org_id, integration_type)
    ), firsts AS MATERIALIZED (  -- per key with an excess: its first excess + 1 rows from its lower bound, and
        SELECT h.org_id, h.integration_type, h.n, h.excess, h.bound,  -- its new oldest slot when it has one
               CASE WHEN cardinality(x.slots) = h.excess + 1 THEN x.slots[h.excess + 1] END AS oldest, x.tids
        FROM held h
        CROSS JOIN LATERAL (
            SELECT array_agg(y.ctid ORDER BY y.slot) AS tids, array_agg(y.slot ORDER BY y.slot) AS slots
            FROM (SELECT x.ctid, x.slot FROM health_check_history x
                  WHERE x.org_id = h.org_id AND x.integration_type = h.integration_type
                    AND x.slot >= coalesce(h.bound, '-infinity')
                  ORDER BY x.slot
                  LIMIT h.excess + 1) y) x
        WHERE h.excess > 0
    ), doomed AS MATERIALIZED (
        SELECT unnest(f.tids[1:f.excess]) AS tid FROM firsts f WHERE f.oldest IS NOT NULL
    ), pruned AS (  -- by ctid: no second index descent per key (history rows are never updated, and pruners
        DELETE FROM health_check_history d  -- are serialised, so the ctid still holds)
        USING doomed
        WHERE d.ctid = doomed.tid
    ), counted AS (  -- a new key's row, as it will be after this prune
        INSERT INTO health_check_history_count AS c (org_id, integration_type, row_count, oldest)
        SELECT h.org_id, h.integration_type, h.n - CASE WHEN f.oldest IS NULL THEN 0 ELSE h.excess END,
               coalesce(f.oldest, h.bound)
        FROM held h
        LEFT JOIN firsts f USING (org_id, integration_type)
        WHERE h.new
    )
    UPDATE health_check_history_count c SET  -- by difference: a delete counted meanwhile by the DELETE trigger
        row_count = greatest(c.row_count + h.n - CASE WHEN f.oldest IS NULL THEN 0 ELSE h.excess END, 0),
        oldest = coalesce(f.oldest, h.bound)  -- is not lost
    FROM held h
    LEFT JOIN firsts f USING (org_id, integration_type)
    WHERE NOT h.new AND c.org_id = h.org_id AND c.integration_type = h.integration_type;
    PERFORM set_config('integration_health.pruning', '', true);
    RETURN NULL;
END
$$;
