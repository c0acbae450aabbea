-- The counted prune of 0023 found a key's doomed rows by reading its index range from the start. The rows the
-- previous cycle pruned are still there as dead index entries until a vacuum, so every cycle's lookup met them
-- first, fetched their heap rows and marked the entries dead: a write to the key's oldest index page, and after
-- a checkpoint (every cycle, at 15-minute cycles) a full-page image of it. At 100,000 integrations that was
-- 100,000 index pages and 800 MB of WAL, 3.2 of the prune's 4.3 s (EXPLAIN (ANALYZE, BUFFERS, WAL), bench/
-- persistence.py, 2026-11-24).
--
-- Now each counter row also keeps `oldest`: no row of the key is older (a lower bound, NULL when unknown). The
-- one counter update per key reads from there the key's first rows to find its new oldest slot, and the
-- doomed rows are read backwards from that new oldest: neither lookup starts below the live rows, so the dead
-- entries of earlier prunes are never visited and the old index pages are only read.
--
-- The rule and the count's hazards are those of 0023 (each key keeps its latest 96 rows; at most 4 rows deleted
-- per row inserted; a count too high deletes from the newest 96 for good). `oldest` adds none: the delete of
-- other rows leaves it a valid lower bound (a lookup then passes the deleted entries once), an insert through
-- the trigger lowers it, and only rows added with triggers off can sit below it, where they are kept (never
-- deleted in their place: the doomed rows are those just below the new oldest). After loading, deleting or
-- restoring history with triggers off, recount, now with the oldest slot:
--   INSERT INTO public.health_check_history_count (org_id, integration_type, row_count, oldest)
--   SELECT org_id, integration_type, count(*), min(slot) FROM public.health_check_history GROUP BY 1, 2
--   ON CONFLICT (org_id, integration_type) DO UPDATE SET row_count = EXCLUDED.row_count, oldest = EXCLUDED.oldest;

ALTER TABLE public.health_check_history_count ADD COLUMN oldest timestamptz;  -- no row of the key is older

UPDATE public.health_check_history_count c SET oldest = h.oldest
FROM (SELECT org_id, integration_type, min(slot) AS oldest FROM public.health_check_history GROUP BY 1, 2) h
WHERE c.org_id = h.org_id AND c.integration_type = h.integration_type;

CREATE OR REPLACE FUNCTION public.health_check_history_prune() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET work_mem = '32MB'  -- a cycle's keys (100,000: ~10 MB) aggregated and sorted in memory, not on disk
AS $$
BEGIN
    -- One pruner at a time (0009): a second transaction inserting for the same key waits here, then
    -- counts and deletes with the first one's rows committed. It also orders the counter rows' locks.
    PERFORM pg_advisory_xact_lock(1635147105);
    -- The deletes below are counted here, in the one counter update per key; the DELETE trigger, which
    -- counts every other delete, leaves them alone.
    PERFORM set_config('integration_health.pruning', 'on', true);
    -- Per key: n rows added from slot `first`; the counter row becomes (held + n - excess), records the excess
    -- to delete and moves `oldest` past it: to the slot `excess` rows up from the lower bound it had (or from
    -- the first new row, when older), read from the key's live rows. A key with more new rows than it keeps
    -- (a backfill) is looked up from its start. Should its rows end before that slot (a count too high), no
    -- slot is found and nothing is deleted.
    WITH added AS (
        SELECT org_id, integration_type, count(*)::integer AS n, min(slot) AS first FROM inserted GROUP BY 1, 2
    ), counted AS (
        INSERT INTO health_check_history_count AS c (org_id, integration_type, row_count, pruned, oldest)
        SELECT a.org_id, a.integration_type, a.n - health_check_history_excess(a.n, a.n),
               health_check_history_excess(a.n, a.n),
               CASE WHEN health_check_history_excess(a.n, a.n) = 0 THEN a.first
                    ELSE (SELECT x.slot FROM health_check_history x
                          WHERE x.org_id = a.org_id AND x.integration_type = a.integration_type
                          ORDER BY x.slot OFFSET health_check_history_excess(a.n, a.n) LIMIT 1) END
        FROM added a
        ON CONFLICT (org_id, integration_type) DO UPDATE SET  -- EXCLUDED.row_count + EXCLUDED.pruned = n
            row_count = c.row_count + EXCLUDED.row_count + EXCLUDED.pruned - health_check_history_excess(
                c.row_count + EXCLUDED.row_count + EXCLUDED.pruned, EXCLUDED.row_count + EXCLUDED.pruned),
            pruned = health_check_history_excess(
                c.row_count + EXCLUDED.row_count + EXCLUDED.pruned, EXCLUDED.row_count + EXCLUDED.pruned),
            oldest = CASE  -- EXCLUDED.oldest is `first` unless the new rows alone exceed 96 (EXCLUDED.pruned > 0)
                WHEN health_check_history_excess(c.row_count + EXCLUDED.row_count + EXCLUDED.pruned,
                                                 EXCLUDED.row_count + EXCLUDED.pruned) = 0
                    THEN CASE WHEN c.oldest IS NOT NULL THEN least(c.oldest, EXCLUDED.oldest) END  -- unknown stays
                ELSE (SELECT x.slot FROM health_check_history x
                      WHERE x.org_id = c.org_id AND x.integration_type = c.integration_type
                        AND x.slot >= CASE WHEN c.oldest IS NULL OR EXCLUDED.pruned > 0 THEN '-infinity'
                                           ELSE least(c.oldest, EXCLUDED.oldest) END
                      ORDER BY x.slot
                      OFFSET health_check_history_excess(c.row_count + EXCLUDED.row_count + EXCLUDED.pruned,
                                                         EXCLUDED.row_count + EXCLUDED.pruned)
                      LIMIT 1)
            END
        RETURNING c.org_id, c.integration_type, c.pruned, c.oldest
    ), doomed AS MATERIALIZED (  -- the `pruned` rows just below the new oldest, by their place in the heap
        SELECT x.ctid AS tid
        FROM counted c
        CROSS JOIN LATERAL (
            SELECT x.ctid FROM health_check_history x
            WHERE x.org_id = c.org_id AND x.integration_type = c.integration_type AND x.slot < c.oldest
            ORDER BY x.slot DESC
            LIMIT c.pruned) x
        WHERE c.pruned > 0
    )
    DELETE FROM health_check_history h  -- by ctid: no second index descent per key (history rows are never
    USING doomed                        -- updated, and pruners are serialised, so the ctid still holds)
    WHERE h.ctid = doomed.tid;
    PERFORM set_config('integration_health.pruning', '', true);
    RETURN NULL;
END
$$;
