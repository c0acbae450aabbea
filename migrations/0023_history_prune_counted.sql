-- History pruning in proportion to the rows inserted. The pruner of 0009 found each inserted key's cutoff by
-- walking its 96 newest index entries: at 100,000 integrations that is the whole 9.6 M-entry index every
-- cycle, and slower still (a heap fetch per entry) while recent pages are not yet all-visible to the index.
-- Now each key's row count is kept beside the table, so a cycle's prune reads and deletes only what it must:
-- per inserted key one counter update and one index descent to the rows to delete (at 15-minute cycles, one).
--
-- The rule is unchanged: each (org_id, integration_type) keeps its latest 96 rows. One call deletes at most
-- 4 rows per row inserted for a key (health_check_history_excess below), so a key that somehow holds far more
-- (a bulk load with triggers off, say) is brought back to 96 over its next inserts, never in one long
-- statement inside a persist.
--
-- The count follows every INSERT, DELETE and TRUNCATE through triggers. Loading or deleting rows with
-- triggers off (session_replication_role = replica), restoring the history table without this one, or
-- updating a row's org_id/integration_type bypasses it. A count too low only keeps extra rows; a count too
-- HIGH makes every later prune delete rows from the newest 96 for good. After any of these, recount with
--   INSERT INTO public.health_check_history_count (org_id, integration_type, row_count)
--   SELECT org_id, integration_type, count(*) FROM public.health_check_history GROUP BY 1, 2
--   ON CONFLICT (org_id, integration_type) DO UPDATE SET row_count = EXCLUDED.row_count;

CREATE TABLE public.health_check_history_count (
    org_id           uuid    NOT NULL,
    integration_type text    NOT NULL,
    row_count        integer NOT NULL CHECK (row_count >= 0),  -- rows the key holds now
    pruned           integer NOT NULL DEFAULT 0 CHECK (pruned >= 0),  -- rows its latest insert's prune deleted
    PRIMARY KEY (org_id, integration_type)
) WITH (fillfactor = 50);  -- updated every cycle for every key: room on the page for HOT updates

-- Same walls as the history it counts (0003): an organisation reads its own counts, the service writes.
ALTER TABLE public.health_check_history_count ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.health_check_history_count FORCE ROW LEVEL SECURITY;
REVOKE ALL ON public.health_check_history_count FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.health_check_history_count TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.health_check_history_count TO service_role;
CREATE POLICY health_check_history_count_read_own_org ON public.health_check_history_count
    FOR SELECT TO authenticated USING (org_id IN (SELECT unnest(public.integration_health_claimed_org_ids())));
CREATE POLICY health_check_history_count_service_role_all ON public.health_check_history_count
    FOR ALL TO service_role USING (true) WITH CHECK (true);

INSERT INTO public.health_check_history_count (org_id, integration_type, row_count)
SELECT org_id, integration_type, count(*) FROM public.health_check_history GROUP BY 1, 2;

-- How many of a key's rows an insert prunes: the excess over 96, at most 4 per row it inserted.
CREATE FUNCTION public.health_check_history_excess(total integer, added integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN least(greatest(total - 96, 0), 4 * added);

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
    -- Per key: n rows added; the counter row becomes (held + n - excess) and records the excess to
    -- delete; then that many rows are deleted from the oldest end of the key's index range. A new key's
    -- counter row is inserted as it will be after its own prune.
    WITH added AS (
        SELECT org_id, integration_type, count(*)::integer AS n FROM inserted GROUP BY 1, 2
    ), counted AS (
        INSERT INTO health_check_history_count AS c (org_id, integration_type, row_count, pruned)
        SELECT org_id, integration_type, n - health_check_history_excess(n, n), health_check_history_excess(n, n)
        FROM added
        ON CONFLICT (org_id, integration_type) DO UPDATE SET  -- EXCLUDED.row_count + EXCLUDED.pruned = n
            row_count = c.row_count + EXCLUDED.row_count + EXCLUDED.pruned - health_check_history_excess(
                c.row_count + EXCLUDED.row_count + EXCLUDED.pruned, EXCLUDED.row_count + EXCLUDED.pruned),
            pruned = health_check_history_excess(
                c.row_count + EXCLUDED.row_count + EXCLUDED.pruned, EXCLUDED.row_count + EXCLUDED.pruned)
        RETURNING c.org_id, c.integration_type, c.pruned
    ), doomed AS MATERIALIZED (  -- the oldest `pruned` rows of each key, by their place in the heap
        SELECT x.ctid AS tid
        FROM counted c
        CROSS JOIN LATERAL (
            SELECT x.ctid FROM health_check_history x
            WHERE x.org_id = c.org_id AND x.integration_type = c.integration_type
            ORDER BY x.slot
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

-- Every other delete (an operator's, a retention job's) takes its rows off the count.
CREATE FUNCTION public.health_check_history_uncount() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    IF current_setting('integration_health.pruning', true) = 'on' THEN
        RETURN NULL;  -- the prune's own delete: already counted
    END IF;
    UPDATE health_check_history_count c SET row_count = greatest(c.row_count - d.n, 0)
    FROM (SELECT org_id, integration_type, count(*)::integer AS n FROM deleted GROUP BY 1, 2) d
    WHERE c.org_id = d.org_id AND c.integration_type = d.integration_type;
    RETURN NULL;
END
$$;

CREATE FUNCTION public.health_check_history_uncount_all() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    DELETE FROM health_check_history_count;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION public.health_check_history_excess(integer, integer) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.health_check_history_excess(integer, integer) TO service_role;  -- the prune runs as it
REVOKE ALL ON FUNCTION public.health_check_history_uncount() FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION public.health_check_history_uncount_all() FROM PUBLIC, anon, authenticated;

CREATE TRIGGER health_check_history_uncount
AFTER DELETE ON public.health_check_history
REFERENCING OLD TABLE AS deleted
FOR EACH STATEMENT EXECUTE FUNCTION public.health_check_history_uncount();

CREATE TRIGGER health_check_history_uncount_all
AFTER TRUNCATE ON public.health_check_history
FOR EACH STATEMENT EXECUTE FUNCTION public.health_check_history_uncount_all();
