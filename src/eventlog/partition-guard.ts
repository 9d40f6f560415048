/**
 * A Redis Cluster can lose one shard (a master with no replica left to
 * promote) and go on serving the others (`cluster-require-full-coverage no`).
 * The partitions whose hash slot that shard held are then unreachable: every
 * command on them fails after the client's redirections, with messages that
 * name no partition. This wrapper turns those failures into one coded error,
 * SG_ERR_LOG_PARTITION_UNAVAILABLE with the partition, so the layers above
 * can tell "this partition is away" from a bug, keep serving the other
 * partitions, and say which ones are unavailable.
 */
import { SyncgateError, isSyncgateError } from '../core/errors.js';
import type { RoomSpec, RoomStore, StateStore } from '../core/ports.js';
import type { AppendRequest, LogBackend } from './backend.js';

/** What ioredis' Cluster client says when no reachable master serves a slot. */
const UNREACHABLE = /Too many Cluster redirections|^CLUSTERDOWN|Connection is closed|max retries per request|ECONNREFUSED|Failed to refresh slots cache/;

export function isShardUnreachable(err: unknown): boolean {
  return err instanceof Error && !isSyncgateError(err) && UNREACHABLE.test(err.message);
}

export function partitionUnavailable(partition: number, err: unknown): SyncgateError {
  const why = err instanceof Error ? err.message : String(err);
  return new SyncgateError('SG_ERR_LOG_PARTITION_UNAVAILABLE', `partition ${partition}: ${why}`, { partition }, { cause: err });
}

/** The methods of a backend whose first argument is a partition. */
const PARTITION_METHODS = [
  'readFeed',
  'readFeedReverse',
  'waitFeed',
  'feedBounds',
  'trimmedUpTo',
  'roomsTrimmedUpTo',
  'roomBounds',
  'roomRange',
  'lookup',
  'addAliases',
  'appendTelemetry',
  'telemetry',
  'trimByAge',
  'groupCreate',
  'groupRead',
  'groupClaim',
  'leaseAcquire',
  'leaseHolder',
  'leaseToken',
  'leaseRelease',
  'groupAck',
  'deadLetter',
  'replays',
  'replayDone',
  'deadList',
  'deadMove',
  'deadCount',
  'pendingCount',
  'deliverySet',
  'deliveryGet',
  'deliveryGetMany',
] as const satisfies ReadonlyArray<keyof LogBackend>;

function translate<T>(partition: number, run: () => Promise<T>): Promise<T> {
  return run().catch((err: unknown) => {
    throw isShardUnreachable(err) ? partitionUnavailable(partition, err) : err;
  });
}

/**
 * The keys outside partitions (room index, users, devices, grants, markers)
 * are single keys on whichever master owns their slot: while that shard
 * fails over, or is lost, what needs them answers SG_ERR_LOG_UNAVAILABLE
 * (a 503 the client retries), not an internal error.
 */
function shared<T>(what: string, run: () => Promise<T>): Promise<T> {
  return run().catch((err: unknown) => {
    if (!isShardUnreachable(err)) throw err;
    throw new SyncgateError('SG_ERR_LOG_UNAVAILABLE', `the Redis Cluster shard holding ${what} is not reachable now: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err });
  });
}

function guardState(state: StateStore): StateStore {
  return {
    get: (ns, key) => shared(`state ${ns}`, () => state.get(ns, key)),
    set: (ns, key, value) => shared(`state ${ns}`, () => state.set(ns, key, value)),
    setIfAbsent: (ns, key, value) => shared(`state ${ns}`, () => state.setIfAbsent(ns, key, value)),
    delete: (ns, key) => shared(`state ${ns}`, () => state.delete(ns, key)),
    entries: (ns) => shared(`state ${ns}`, () => state.entries(ns)),
    advance: (ns, key, value) => shared(`state ${ns}`, () => state.advance(ns, key, value)),
    update: (ns, set, del) => shared(`state ${ns}`, () => state.update(ns, set, del)),
    fencedUpdate: (ns, token, set, del) => shared(`state ${ns}`, () => state.fencedUpdate(ns, token, set, del)),
  };
}

/**
 * The room store with its per-room operations (a room's spec lives on its
 * partition's slot) translated too; a room whose partition this process has
 * not looked up yet counts as shared (its directory entry is one key).
 */
function guardRooms(rooms: RoomStore, partitionOfRoom: (room: string) => number | undefined): RoomStore {
  const guard = <T>(room: string, run: () => Promise<T>): Promise<T> => {
    const partition = partitionOfRoom(room);
    return partition === undefined ? shared(`room ${room}`, run) : translate(partition, run);
  };
  return {
    put: (spec: RoomSpec) => guard(spec.id, () => rooms.put(spec)),
    get: (room: string) => guard(room, () => rooms.get(room)),
    delete: (room: string) => guard(room, () => rooms.delete(room)),
    list: () => shared('the room index', () => rooms.list()),
    watch: (listener) => rooms.watch(listener),
  };
}

/** The same backend, its per-partition failures coded (see the top of this file). */
export function guardPartitions<B extends LogBackend>(backend: B): B {
  const rooms = guardRooms(backend.rooms, (room) => backend.knownRoomPartition(room));
  const wrapped = new Map<PropertyKey, unknown>([
    ['rooms', rooms],
    ['state', guardState(backend.state)],
    ['append', (request: AppendRequest) => translate(request.partition, () => backend.append(request))],
  ]);
  for (const name of PARTITION_METHODS) {
    const method = backend[name] as (partition: number, ...rest: unknown[]) => Promise<unknown>;
    wrapped.set(name, (partition: number, ...rest: unknown[]) => translate(partition, () => method.call(backend, partition, ...rest)));
  }
  return new Proxy(backend, {
    get(target, property) {
      if (wrapped.has(property)) return wrapped.get(property);
      // the backend's own methods run on the backend itself (its `rooms` is the unwrapped store)
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
