-- Sequences and functions: the client roles (anon, authenticated) get only what RLS needs.
-- Supabase's default privileges grant ALL on every new sequence and function in public to anon,
-- authenticated and service_role, and PostgreSQL grants EXECUTE on every new function to PUBLIC.
-- With UPDATE on the history table's id sequence, any signed-in user could setval() it to its maximum
-- and stop every history write, and with it every status write of the same statement.
-- Tables were locked down where they were created (0003, 0007, 0008); these objects were not.
--
-- Default privileges are left alone: on Supabase this product migrates as `postgres` into public, like
-- the deployer's own objects, so changing them would change the deployer's grants too. Instead each
-- later migration revokes what it creates (REVOKE ALL ON … FROM PUBLIC, anon, authenticated), and
-- tests/db/test_rls.py, which reproduces Supabase's defaults, fails for any sequence or function it missed.

REVOKE ALL ON SEQUENCE public.health_check_history_id_seq FROM PUBLIC, anon, authenticated;

-- authenticated keeps EXECUTE: its SELECT policies call this function as that role.
REVOKE ALL ON FUNCTION public.integration_health_claimed_org_ids() FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.integration_health_claimed_org_ids() TO authenticated, service_role;

-- A trigger function: the trigger fires it without an EXECUTE check, so nobody needs the privilege.
REVOKE ALL ON FUNCTION public.health_check_history_prune() FROM PUBLIC, anon, authenticated;

REVOKE ALL ON FUNCTION public.integration_health_shard_of(uuid, integer) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.integration_health_shard_of(uuid, integer) TO service_role;
