/**
 * Room links as an in-memory index over the room store, kept current by the
 * store's change notifications, so links change at run time on every replica
 * without restarting adapters (docs/architecture.md, "Rooms and links").
 */
import type { Logger } from 'pino';
import type { LinkView } from '../core/adapter.js';
import type { RoomLink, RoomSpec, RoomStore } from '../core/ports.js';

export interface RoomLinks extends LinkView {
  /** the links of a room, from the index */
  linksOfRoom(room: string): readonly RoomLink[];
  rooms(): readonly RoomSpec[];
  /** re-reads one room (or all) from the store */
  refresh(room?: string): Promise<void>;
  close(): void;
}

const key = (endpoint: string, target: string) => `${endpoint}\u0000${target}`;

export async function createRoomLinks(deps: { rooms: RoomStore; logger: Logger }): Promise<RoomLinks> {
  const specs = new Map<string, RoomSpec>();
  let byTarget = new Map<string, string[]>();
  const listeners = new Set<() => void>();

  const reindex = () => {
    const next = new Map<string, string[]>();
    for (const spec of specs.values()) {
      for (const link of spec.links) {
        const k = key(link.endpoint, link.target);
        next.set(k, [...(next.get(k) ?? []), spec.id]);
      }
    }
    byTarget = next;
    for (const l of listeners) {
      try {
        l();
      } catch (err) {
        deps.logger.error({ err }, 'link change listener failed');
      }
    }
  };

  const refresh = async (room?: string) => {
    if (room === undefined) {
      specs.clear();
      for (const spec of await deps.rooms.list()) specs.set(spec.id, spec);
    } else {
      const spec = await deps.rooms.get(room);
      if (spec) specs.set(room, spec);
      else specs.delete(room);
    }
    reindex();
  };

  const unwatch = await deps.rooms.watch((room) => {
    refresh(room).catch((err: unknown) => deps.logger.warn({ err, room }, 'could not reload room links'));
  });
  await refresh();

  return {
    roomsFor: (endpoint, target) => byTarget.get(key(endpoint, target)) ?? [],
    linksOf: (endpoint) => [...specs.values()].flatMap((spec) => spec.links.filter((l) => l.endpoint === endpoint).map((link) => ({ room: spec.id, link }))),
    linksOfRoom: (room) => specs.get(room)?.links ?? [],
    rooms: () => [...specs.values()],
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    refresh,
    close: () => {
      unwatch();
      listeners.clear();
    },
  };
}
