"""The SQL of the partition leases (``gateway/leases.py``): the schema and every statement.

The schema is one constant (``SCHEMA``) so that it can move into the store's versioned
migrations as it is; until then ``LeaseBook`` runs it at start, under a transaction-level
advisory lock, because concurrent ``CREATE ... IF NOT EXISTS`` and ``CREATE OR REPLACE
FUNCTION`` from gateways starting together can fail with a unique violation or
"tuple concurrently updated".

Advisory locks use the two-key form ``(NAMESPACE, partition)``: the first key keeps ours
apart from any other user of advisory locks in the database, and ``pg_locks`` shows them
as ``classid = NAMESPACE, objid = partition, objsubid = 2``.
"""

from __future__ import annotations

NAMESPACE = 0x49434F4D  # "ICOM": fits a signed int4, as the two-key form needs
SCHEMA_LOCK = 0x49434F4E  # serialises the DDL below between gateways starting together
FENCE_SQLSTATE = "IGL01"  # raised by intercom_lease_fence when the epoch moved on
NOTIFY_CHANNEL = "intercom_leases"

SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_members (
    gateway_id    text PRIMARY KEY,
    heartbeat_at  timestamptz NOT NULL,
    -- the session that holds the member's advisory locks: when it is gone, so are they
    backend_pid   integer NOT NULL,
    backend_start timestamptz
);
-- what the member decides with (its registry, partners and policy): one for all members
ALTER TABLE gateway_members ADD COLUMN IF NOT EXISTS config_sha256 text;
CREATE TABLE IF NOT EXISTS partition_leases (
    partition integer PRIMARY KEY,
    owner     text,            -- NULL once released; a dead owner's name stays until taken
    epoch     bigint NOT NULL, -- the fencing token: grows by one at every take
    since     timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION intercom_lease_fence(p integer, e bigint) RETURNS void
LANGUAGE plpgsql AS $fence$
BEGIN
    -- FOR SHARE: a takeover's epoch bump (an UPDATE of this row) waits for the caller's
    -- commit, or the caller, coming second, sees the new epoch and fails.
    PERFORM 1 FROM partition_leases
     WHERE partition = p AND epoch = e AND owner IS NOT NULL
       FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease of partition % (epoch %) is lost', p, e
              USING ERRCODE = 'IGL01';
    END IF;
END
$fence$;
"""

FENCE = "SELECT intercom_lease_fence($1::integer, $2::bigint)"

HEARTBEAT = """
INSERT INTO gateway_members (gateway_id, heartbeat_at, backend_pid, backend_start,
                             config_sha256)
VALUES ($1, clock_timestamp(), pg_backend_pid(),
        (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), $2)
ON CONFLICT (gateway_id) DO UPDATE
   SET heartbeat_at = excluded.heartbeat_at,
       backend_pid = excluded.backend_pid,
       backend_start = excluded.backend_start,
       config_sha256 = excluded.config_sha256
"""

# A member's session is alive when its backend still runs (the same pid and start time:
# a pid can be reused). Checked as well as the heartbeat so that a gateway whose database
# session ended drops out at the next rebalance of the others, not after ``expiry``.
_SESSION_ALIVE = """
EXISTS (SELECT 1 FROM pg_stat_activity a
         WHERE a.pid = m.backend_pid
           AND (a.backend_start IS NULL OR m.backend_start IS NULL
                OR a.backend_start = m.backend_start))
"""

LIVE_MEMBERS = f"""
SELECT m.gateway_id FROM gateway_members m
 WHERE m.heartbeat_at > clock_timestamp() - make_interval(secs => $1)
   AND {_SESSION_ALIVE}
 ORDER BY m.gateway_id
"""

# Members that stopped heartbeating but whose session lives on and still holds some of
# our locks (a hung process, a long pause, a half-open connection): their sessions are
# ended so that the locks come free; the epoch bump at the next take fences them off.
STALE_HOLDERS = f"""
SELECT m.gateway_id, m.backend_pid FROM gateway_members m
 WHERE m.heartbeat_at <= clock_timestamp() - make_interval(secs => $1)
   AND m.gateway_id <> $2
   AND {_SESSION_ALIVE}
   AND EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.pid = m.backend_pid
                  AND l.classid = {NAMESPACE}::oid AND l.objsubid = 2 AND l.granted)
"""

TERMINATE = "SELECT pg_terminate_backend($1, $2)"

# Live members that decide with another registry, partners or policy than $2's: a gateway
# joining checks this before its first heartbeat, so that it never counts as a member.
OTHER_CONFIGS = f"""
SELECT m.gateway_id FROM gateway_members m
 WHERE m.heartbeat_at > clock_timestamp() - make_interval(secs => $1)
   AND {_SESSION_ALIVE}
   AND m.gateway_id <> $2
   AND m.config_sha256 IS DISTINCT FROM $3
 ORDER BY m.gateway_id
"""

# Members that are neither live nor holding anything: forgotten, so the table stays small.
FORGET_DEAD = f"""
DELETE FROM gateway_members m
 WHERE m.gateway_id <> $2
   AND (m.heartbeat_at <= clock_timestamp() - make_interval(secs => $1)
        OR NOT {_SESSION_ALIVE})
   AND NOT EXISTS (SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.pid = m.backend_pid
                      AND l.classid = {NAMESPACE}::oid AND l.objsubid = 2 AND l.granted)
"""

LEAVE = "DELETE FROM gateway_members WHERE gateway_id = $1"

# Partitions whose advisory lock nobody holds now; a candidate list only, the lock is
# taken with pg_try_advisory_lock one by one (a LIMIT over a locking function could lock
# more rows than it returns).
FREE_PARTITIONS = f"""
SELECT p FROM generate_series(0, $1 - 1) AS p
 WHERE NOT EXISTS (SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.classid = {NAMESPACE}::oid
                      AND l.objid = p::oid AND l.objsubid = 2 AND l.granted)
 ORDER BY p
"""

TRY_LOCK = f"SELECT pg_try_advisory_lock({NAMESPACE}, $1)"
UNLOCK = f"SELECT pg_advisory_unlock({NAMESPACE}, $1)"

TAKE = """
INSERT INTO partition_leases AS l (partition, owner, epoch, since)
VALUES ($1, $2, 1, clock_timestamp())
ON CONFLICT (partition) DO UPDATE
   SET owner = excluded.owner, epoch = l.epoch + 1, since = excluded.since
RETURNING epoch, since
"""

RELEASE = "UPDATE partition_leases SET owner = NULL WHERE partition = $1 AND owner = $2"

# The fencing check of ``holds``: the lease row still has our epoch and our session still
# holds the partition's advisory lock.
HOLDS = f"""
SELECT EXISTS (
    SELECT 1 FROM partition_leases r
      JOIN pg_locks l ON l.locktype = 'advisory' AND l.classid = {NAMESPACE}::oid
                     AND l.objid = r.partition::oid AND l.objsubid = 2 AND l.granted
                     AND l.pid = pg_backend_pid()
     WHERE r.partition = $1 AND r.epoch = $2 AND r.owner = $3)
"""

# Every partition whose lock is held now, with the lease row of its owner.
OWNERS = f"""
SELECT r.partition, r.owner, r.epoch, r.since FROM partition_leases r
 WHERE r.owner IS NOT NULL
   AND EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.classid = {NAMESPACE}::oid
                  AND l.objid = r.partition::oid AND l.objsubid = 2 AND l.granted)
 ORDER BY r.partition
"""

BACKEND_START = "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"

# After a reconnect: end our previous session if the server still runs it (a half-open
# connection), so that its locks come free instead of lingering until TCP gives up.
END_OLD_SESSION = """
SELECT pg_terminate_backend(pid, $3) FROM pg_stat_activity
 WHERE pid = $1 AND backend_start IS NOT DISTINCT FROM $2
"""
