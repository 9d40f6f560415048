/**
 * The room links naming XMPP conversations: which gateway rooms a MUC or a
 * 1:1 JID feeds (`state.targets`, read by the ingest path), and which MUCs the
 * bridge account should be in — joined when a link appears, left when the
 * last one goes, rejoined under a new nick when the link's nick changes.
 * Read at start and again on every change of the links.
 */
import { linkOptions, type LinkOptions, type RoomCreation } from './config.js';
import { joinRoom, leaveRoom, newRoom } from './muc.js';
import type { Target, XmppAdapterState } from './state.js';

export function refreshTargets(s: XmppAdapterState): void {
  const { rooms } = s;
  const next = new Map<string, Target[]>();
  for (const { room, link } of s.links.linksOf(s.name)) {
    let options: LinkOptions;
    try {
      options = linkOptions(link);
    } catch (err) {
      s.log.error({ room, target: link.target, err: (err as Error).message }, 'ignoring an invalid XMPP room link');
      continue;
    }
    const jid = link.target.toLowerCase();
    next.set(jid, [...(next.get(jid) ?? []), { room, link, options }]);
  }
  s.targets = next;
  const wanted = new Map<string, { nick: string; password: string | undefined; create: RoomCreation }>();
  for (const [jid, ts] of next) {
    const muc = ts.find((t) => t.options.type === 'groupchat');
    if (muc && muc.options.type === 'groupchat') wanted.set(jid, { nick: muc.options.nick ?? s.config.mucNick, password: muc.options.password, create: muc.options.create });
  }
  for (const [jid, want] of wanted) {
    const existing = rooms.get(jid);
    if (existing && existing.configuredNick === want.nick) {
      existing.password = want.password;
      existing.create = want.create;
      continue;
    }
    if (existing) leaveRoom(s, existing);
    const room = newRoom(s, jid, want);
    rooms.set(jid, room);
    if (s.connection.online) void joinRoom(s, room, s.generation);
  }
  for (const [jid, room] of rooms) if (!wanted.has(jid)) leaveRoom(s, room);
}
