// Starts test/harness/omemo-peer.py: an OMEMO 0.3 client that is not ours
// (Debian's python3-omemo + python3-oldmemo on python3-slixmpp), logged in to
// the harness's XMPP server, driven over stdin/stdout JSON lines. Its OMEMO
// store is a file in its own temp dir, so a restarted peer is the same device.
import { spawn, type ChildProcess } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { isRunning, killOnExit, terminate, waitFor } from './free-port.js';
import type { XmppServer } from './xmpp-server.js';

// Beside this file when run from source; from the checkout when compiled (npm run bench builds into .tmp/).
const SCRIPT_CANDIDATES = [join(dirname(fileURLToPath(import.meta.url)), 'omemo-peer.py'), join(process.cwd(), 'test', 'harness', 'omemo-peer.py')];
const PYTHON = '/usr/bin/python3';
const MISSING = 'the OMEMO test peer needs Debian python3 with python3-omemo, python3-oldmemo, python3-twomemo, python3-slixmpp and python3-xmlschema (apt-get install -y python3-omemo python3-oldmemo python3-twomemo python3-slixmpp python3-xmlschema, or run .ci/install-services.sh as root)';

export interface PeerEvent {
  readonly event: string;
  readonly [key: string]: unknown;
}

export interface PeerMessage extends PeerEvent {
  readonly event: 'message';
  readonly from: string;
  readonly id: string;
  readonly body: string;
  readonly encrypted: boolean;
  readonly replace: string | null;
}

export class OmemoPeer {
  readonly events: PeerEvent[] = [];
  readonly stderr: string[] = [];
  deviceId = 0;
  /** the identity key's Curve25519 form in hex, as clients show it */
  fingerprint = '';

  private constructor(
    readonly jid: string,
    private readonly child: ChildProcess,
    private readonly dir: string,
    private readonly owned: boolean,
  ) {}

  /** Logs `localpart` in (resource `resource`) and publishes its OMEMO device; resolves when it is ready. */
  static async start(server: XmppServer, opts: { localpart: string; password: string; resource?: string; storeDir?: string }): Promise<OmemoPeer> {
    try {
      await access(PYTHON);
    } catch {
      throw new Error(MISSING);
    }
    let script: string | undefined;
    for (const candidate of SCRIPT_CANDIDATES) {
      if (script === undefined && (await access(candidate).then(() => true, () => false))) script = candidate;
    }
    if (script === undefined) throw new Error(`omemo-peer.py not found (looked in ${SCRIPT_CANDIDATES.join(', ')})`);
    const dir = opts.storeDir ?? (await mkdtemp(join(tmpdir(), 'sg-omemo-peer-')));
    const jid = `${opts.localpart}@${server.domain}`;
    const cfg = { jid, password: opts.password, host: server.host, port: server.c2sPort, resource: opts.resource ?? 'peer', store: join(dir, 'omemo.json') };
    // PYTHONPATH off: Debian's python3 with Debian's modules, whatever python a developer has first on PATH.
    const env = { ...process.env, PYTHONPATH: '', PYTHONNOUSERSITE: '1' };
    const child = spawn(PYTHON, [script, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'], env });
    killOnExit(child);
    const peer = new OmemoPeer(jid, child, dir, opts.storeDir === undefined);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        peer.events.push(JSON.parse(line) as PeerEvent);
      } catch {
        peer.stderr.push(`stdout: ${line}`);
      }
    });
    createInterface({ input: child.stderr! }).on('line', (line) => peer.stderr.push(line));
    const ready = await peer.waitFor((e) => e.event === 'ready', `the OMEMO peer ${jid} ready`, 60_000);
    peer.deviceId = ready['deviceId'] as number;
    peer.fingerprint = ready['fingerprint'] as string;
    return peer;
  }

  /** The store dir (pass it to start() again for the same device). */
  get storeDir(): string {
    return this.dir;
  }

  send(cmd: Record<string, unknown>): void {
    this.child.stdin!.write(`${JSON.stringify(cmd)}\n`);
  }

  /** Sends `body` OMEMO-encrypted to every device of `to` (and our own other devices); resolves with the stanza id. */
  async sendEncrypted(to: string, body: string, extra: Record<string, unknown> = {}): Promise<string> {
    const id = (extra['id'] as string | undefined) ?? `peer-${Math.random().toString(36).slice(2)}`;
    const mark = this.events.length;
    this.send({ cmd: 'send', to, body, ...extra, id });
    await this.waitFor((e, i) => i >= mark && (e.event === 'sent' || e.event === 'error') && (e['id'] === id || e['cmd'] === 'send'), `the peer's send of ${id}`);
    const last = this.events.slice(mark).find((e) => e.event === 'error');
    if (last) throw new Error(`the peer could not send: ${String(last['error'])}`);
    return id;
  }

  /** The peer's current view of `jid`'s OMEMO devices (its device list, refreshed). */
  async devices(jid: string): Promise<{ ids: number[]; keys: Record<string, string> }> {
    const mark = this.events.length;
    this.send({ cmd: 'devices', jid });
    const e = await this.waitFor((ev, i) => i >= mark && (ev.event === 'devices' || (ev.event === 'error' && ev['cmd'] === 'devices')), `the devices of ${jid}`);
    if (e.event === 'error') throw new Error(`devices of ${jid}: ${String(e['error'])}`);
    return { ids: e['ids'] as number[], keys: e['keys'] as Record<string, string> };
  }

  /** Creates (joins, configures) a members-only, non-anonymous room, `members` made members. */
  async createRoom(room: string, nick: string, members: readonly string[]): Promise<void> {
    const mark = this.events.length;
    this.send({ cmd: 'muc-create', room, nick, members });
    const e = await this.waitFor((ev, i) => i >= mark && (ev.event === 'muc-ready' || (ev.event === 'error' && ev['cmd'] === 'muc-create')), `the room ${room}`);
    if (e.event === 'error') throw new Error(`muc-create ${room}: ${String(e['error'])}`);
  }

  /** The real JIDs of the room's other occupants, as the peer sees them. */
  async occupants(room: string): Promise<string[]> {
    const mark = this.events.length;
    this.send({ cmd: 'occupants', room });
    const e = await this.waitFor((ev, i) => i >= mark && ev.event === 'occupants', `the occupants of ${room}`);
    return e['jids'] as string[];
  }

  messages(): PeerMessage[] {
    return this.events.filter((e): e is PeerMessage => e.event === 'message');
  }

  async waitFor(match: (e: PeerEvent, index: number) => boolean, what: string, timeoutMs = 30_000): Promise<PeerEvent> {
    let found: PeerEvent | undefined;
    try {
      await this.waitUntil(match, what, timeoutMs, (f) => {
        found = f;
      });
    } catch (err) {
      // What the peer said last, to see why.
      throw new Error(`${(err as Error).message}\n--- peer events ---\n${this.events.slice(-10).map((e) => JSON.stringify(e)).join('\n')}\n--- peer stderr ---\n${this.stderr.slice(-30).join('\n')}`);
    }
    return found as PeerEvent;
  }

  private async waitUntil(match: (e: PeerEvent, index: number) => boolean, what: string, timeoutMs: number, found: (e: PeerEvent) => void): Promise<void> {
    await waitFor(
      () => {
        const e = this.events.find(match);
        if (e) found(e);
        return e !== undefined;
      },
      {
        what,
        timeoutMs,
        intervalMs: 20,
        failFast: () => {
          const fatal = this.events.find((e) => e.event === 'fatal');
          if (fatal) return new Error(`OMEMO peer ${this.jid}: ${String(fatal['error'])}\n${this.stderr.slice(-20).join('\n')}`);
          return isRunning(this.child) ? undefined : new Error(`OMEMO peer ${this.jid} exited (${this.child.exitCode})\n${this.stderr.slice(-30).join('\n')}`);
        },
      },
    );
  }

  async stop(): Promise<void> {
    if (isRunning(this.child)) {
      this.send({ cmd: 'stop' });
      await terminate(this.child, 5_000);
    }
    if (this.owned) await rm(this.dir, { recursive: true, force: true });
  }
}
