/**
 * The operator console: Preact + htm, bundled by esbuild (scripts/build-console.mjs).
 * Every body, name and id is rendered as text (Preact escapes it); nothing is
 * ever set as HTML, so chat content cannot run in the page. Pages poll the
 * admin API, except a room's timeline, which comes live from its stream;
 * navigation is by the URL fragment (#/rooms/plant).
 */
import { render } from 'preact';
import { html } from 'htm/preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import {
  ApiError,
  api,
  followRoom,
  storeToken,
  storedToken,
  type AdapterStatus,
  type AuditEntry,
  type DeadLetter,
  type Delivery,
  type Device,
  type Identity,
  type Lag,
  type LogEvent,
  type Room,
  type RuleResult,
  type Status,
  type TimelinePage,
  type Trace,
} from './api.js';

type Html = ReturnType<typeof html>;

interface Session {
  readonly token: string;
  readonly who: Identity;
}

const PAGES = [
  { path: 'overview', name: 'Overview' },
  { path: 'rooms', name: 'Rooms' },
  { path: 'trace', name: 'Trace' },
  { path: 'dead-letters', name: 'Dead letters' },
  { path: 'rules', name: 'Rules' },
  { path: 'devices', name: 'Devices' },
] as const;

// --- small helpers

const time = (ms: number | undefined): string => (ms === undefined ? '' : new Date(ms).toISOString().replace('T', ' ').slice(0, 19));
const seconds = (s: number): string => (s < 10 ? s.toFixed(1) : Math.round(s).toString());
const errorText = (err: unknown): string => (err instanceof ApiError ? `${err.message} (${err.code})` : err instanceof Error ? err.message : String(err));

function useHash(): string[] {
  const read = () => decodeURIComponent(location.hash.replace(/^#\/?/, '')).split('/').filter((s, i) => s !== '' || i === 0);
  const [parts, setParts] = useState(read);
  useEffect(() => {
    const on = () => setParts(read());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return parts;
}

/** Loads now and every `everyMs` while the page is shown; `reload` loads at once. */
function usePoll<T>(load: () => Promise<T>, deps: readonly unknown[], everyMs = 2000): { data: T | undefined; error: string | undefined; reload: () => void } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        const value = await load();
        if (live) {
          setData(value);
          setError(undefined);
        }
      } catch (err) {
        if (live) setError(errorText(err));
      }
      if (live && everyMs > 0) timer = setTimeout(() => void run(), everyMs);
    };
    void run();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [...deps, tick]);
  return { data, error, reload };
}

function StateBadge({ state }: { state: string }): Html {
  return html`<span class=${`state state-${state}`}>${state}</span>`;
}

function bodyOf(event: LogEvent): string {
  if (event.content?.body !== undefined) return event.content.body;
  if (event.kind === 'reaction') return (event.reaction?.keys ?? []).join(' ');
  return `(${event.kind})`;
}

function relationsOf(event: LogEvent): string {
  const rel = event.rel ?? {};
  const names: Record<string, string> = { replaces: 'edit of', replyTo: 'reply to', reactsTo: 'reaction to', redacts: 'retracts', thread: 'in thread' };
  return Object.entries(rel)
    .filter(([, v]) => typeof v === 'string')
    .map(([k, v]) => `${names[k] ?? k} ${v ?? ''}`)
    .join('; ');
}

function senderOf(event: LogEvent): string {
  return event.sender?.display ?? event.sender?.native ?? event.sender?.uid ?? '';
}

function DeliveryItem({ d }: { d: Delivery }): Html {
  const ids = Object.entries(d.nativeIds ?? {}).map(([k, v]) => `${k}=${v}`);
  return html`<li>
    <${StateBadge} state=${d.state} /> ${d.endpoint} <span class="muted">${d.target}</span>
    ${d.state === 'delivered' && ids.length > 0 ? html` <span class="muted">${ids.join(', ')}</span>` : null}
    ${d.state === 'delivered' && d.at !== undefined ? html` <span class="muted">at ${time(d.at)}</span>` : null}
    ${d.state === 'retrying' ? html` <span>attempt ${d.attempt ?? '?'}, next at ${time(d.nextAt)}: ${d.error ?? ''}</span>` : null}
    ${d.state === 'dead-lettered' || d.state === 'discarded' ? html` <span>${d.error ?? ''}</span>` : null}
  </li>`;
}

function ErrorLine({ error }: { error: string | undefined }): Html | null {
  return error === undefined ? null : html`<p class="error" role="alert">${error}</p>`;
}

/** A confirmation as a modal dialog: focus on Cancel, Escape cancels. */
function Confirm({ text, action, onConfirm, onCancel }: { text: string; action: string; onConfirm: () => void; onCancel: () => void }): Html {
  const cancel = useRef<HTMLButtonElement>(null);
  useEffect(() => cancel.current?.focus(), []);
  return html`<div role="dialog" aria-modal="true" aria-labelledby="confirm-text" onKeyDown=${(e: KeyboardEvent) => e.key === 'Escape' && onCancel()}>
    <p id="confirm-text">${text}</p>
    <div class="actions">
      <button class="danger" onClick=${onConfirm}>${action}</button>
      <button ref=${cancel} onClick=${onCancel}>Cancel</button>
    </div>
  </div>`;
}

// --- sign-in

function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }): Html {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const who = await api<Identity>(token.trim(), 'GET', '/v1/admin/whoami');
      storeToken(token.trim());
      onSignedIn({ token: token.trim(), who });
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        setError(err.code === 'SG_ERR_AUTH_MISSING' ? 'Enter the admin token or a viewer token.' : `This token was not accepted: it is not valid for this gateway (${err.code}).`);
      } else setError(`Cannot sign in: ${errorText(err)}`);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="signin">
    <h1>syncgate console</h1>
    <form onSubmit=${submit}>
      <label for="token">Admin token
        <input id="token" type="password" autocomplete="off" required value=${token} onInput=${(e: Event) => setToken((e.target as HTMLInputElement).value)} />
      </label>
      <p class="muted">The admin token, or a read-only viewer token (http.viewerTokens). It is kept in this tab only.</p>
      <${ErrorLine} error=${error} />
      <button class="primary" type="submit" disabled=${busy}>Sign in</button>
    </form>
  </main>`;
}

// --- pages

function Overview({ session }: { session: Session }): Html {
  const { data, error } = usePoll(async () => {
    const [status, lag] = await Promise.all([api<Status>(session.token, 'GET', '/v1/admin/status'), api<Lag>(session.token, 'GET', '/v1/admin/lag')]);
    return { status, lag };
  }, [session.token]);
  const adapters = Object.entries(data?.status.adapters ?? {});
  return html`<section>
    <h1>Overview</h1>
    <${ErrorLine} error=${error} />
    ${data
      ? html`<p>
          Event log: ${data.status.log.backend}, ${data.status.log.durable ? 'durable' : 'not durable'},
          <${StateBadge} state=${data.status.log.available ? 'connected' : 'disconnected'} />
          ${(data.status.log.unavailablePartitions ?? []).length > 0 ? html` <span class="error">partitions unavailable: ${(data.status.log.unavailablePartitions ?? []).join(', ')}</span>` : null}
        </p>`
      : html`<p class="muted">Loading…</p>`}
    <h2>Adapters</h2>
    <table>
      <thead>
        <tr>
          <th scope="col">Adapter</th><th scope="col">Protocol</th><th scope="col">On this replica</th><th scope="col">Held by</th><th scope="col">Connection</th><th scope="col">Ready</th>
          <th scope="col">In (events/s, all replicas)</th><th scope="col">Out (events/s, all replicas)</th><th scope="col">Lag (events)</th><th scope="col">Lag (seconds)</th><th scope="col">Retrying rooms</th><th scope="col">Dead letters</th><th scope="col">Last error</th>
        </tr>
      </thead>
      <tbody>
        ${adapters.map(([name, a]) => {
          const lag = data?.lag.adapters[name];
          return html`<tr>
            <th scope="row">${name}</th>
            <td>${a.protocol}</td>
            <td><${StateBadge} state=${a.state} /></td>
            <td>${a.holder ?? ''}</td>
            <td><${StateBadge} state=${a.connected ? 'connected' : 'disconnected'} /></td>
            <td>${a.ready ? 'ready' : `not ready: ${notReadyReasons(a).join('; ')}`}</td>
            <td title=${a.replicaRates ? `this replica: ${a.replicaRates.inPerSecond.toFixed(1)}` : ''}>${a.rates ? a.rates.inPerSecond.toFixed(1) : ''}</td>
            <td title=${a.replicaRates ? `this replica: ${a.replicaRates.outPerSecond.toFixed(1)}` : ''}>${a.rates ? a.rates.outPerSecond.toFixed(1) : ''}</td>
            <td>${lag?.events ?? ''}</td>
            <td>${lag ? seconds(lag.seconds) : ''}</td>
            <td>${lag?.retrying ?? ''}</td>
            <td>${lag?.deadLetters ?? ''}</td>
            <td>${a.lastError ? `${a.lastError.message} (${a.lastError.at})` : ''}</td>
          </tr>`;
        })}
      </tbody>
    </table>
    ${adapters.length === 0 && data ? html`<p class="muted">No adapters are configured.</p>` : null}
    <h2>Links</h2>
    <table aria-label="Lag per link">
      <caption class="muted">Per room and link: events in and out per second (all replicas, last ~10 s), the events not delivered there yet and the age of the oldest.</caption>
      <thead>
        <tr><th scope="col">Room</th><th scope="col">Adapter</th><th scope="col">Target</th><th scope="col">In (events/s)</th><th scope="col">Out (events/s)</th><th scope="col">Lag (events)</th><th scope="col">Lag (seconds)</th><th scope="col">Retrying</th><th scope="col">Dead letters</th></tr>
      </thead>
      <tbody>
        ${(data?.lag.links ?? []).map(
          (l) => html`<tr>
            <th scope="row"><a href=${`#/rooms/${encodeURIComponent(l.room)}`}>${l.room}</a></th>
            <td>${l.endpoint}</td>
            <td>${l.target}</td>
            <td>${l.inPerSecond !== undefined ? l.inPerSecond.toFixed(1) : ''}</td>
            <td>${l.outPerSecond !== undefined ? l.outPerSecond.toFixed(1) : ''}</td>
            <td>${l.capped === true ? '≥ ' : ''}${l.events}</td>
            <td>${seconds(l.seconds)}</td>
            <td>${l.retrying ? html`<${StateBadge} state="retrying" />` : 'no'}</td>
            <td>${l.deadLetters}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    <h2>Replicas</h2>
    <table>
      <thead><tr><th scope="col">Replica</th><th scope="col">Version</th><th scope="col">Config hash</th><th scope="col">Started</th><th scope="col">Last seen</th></tr></thead>
      <tbody>
        ${(data?.status.replicas ?? []).map(
          (r) => html`<tr>
            <th scope="row">${r.replicaId}</th><td>${r.version}</td>
            <td>${r.configHash}${r.drift ? html` <span class="state state-failed">drift: differs from the other replicas</span>` : null}</td>
            <td>${time(r.startedAt)}</td><td>${time(r.seenAt)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

/** Why an adapter is not ready, from what the status says of it on this replica. */
function notReadyReasons(a: AdapterStatus): string[] {
  const reasons: string[] = [];
  if (a.state === 'standby') reasons.push(`standby here${a.holder !== undefined ? `, connection held by ${a.holder}` : ''}`);
  else {
    if (a.state !== 'active') reasons.push(`adapter ${a.state}`);
    reasons.push(a.connected ? 'connected, not yet joined or subscribed' : 'not connected to its server');
  }
  if (a.lastError) reasons.push(`last error: ${a.lastError.message}`);
  return reasons;
}

function Rooms({ session }: { session: Session }): Html {
  const { data, error } = usePoll(() => api<{ rooms: Room[] }>(session.token, 'GET', '/v1/admin/rooms'), [session.token], 5000);
  return html`<section>
    <h1>Rooms</h1>
    <${ErrorLine} error=${error} />
    <table>
      <thead><tr><th scope="col">Room</th><th scope="col">Name</th><th scope="col">Links</th></tr></thead>
      <tbody>
        ${(data?.rooms ?? []).map(
          (r) => html`<tr>
            <th scope="row"><a href=${`#/rooms/${encodeURIComponent(r.id)}`}>${r.id}</a></th>
            <td>${r.name ?? ''}</td>
            <td><ul class="deliveries">${r.links.map((l) => html`<li>${l.endpoint} <span class="muted">${l.target}</span></li>`)}</ul></td>
          </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

function Timeline({ session, room }: { session: Session; room: string }): Html {
  const path = `/v1/admin/rooms/${encodeURIComponent(room)}/timeline?limit=50`;
  // the newest entries come live from the stream (a snapshot, then new events and delivery changes); older pages on demand
  const [recent, setRecent] = useState<TimelinePage | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [older, setOlder] = useState<TimelinePage['events']>([]);
  const [next, setNext] = useState<string | undefined>(undefined);
  const [olderError, setOlderError] = useState<string | undefined>(undefined);
  useEffect(() => {
    setRecent(undefined);
    return followRoom(
      session.token,
      room,
      (frame) => {
        if (frame.name === 'snapshot') setRecent(frame.data);
        else if (frame.name === 'entry') {
          const entry = frame.data;
          setRecent((page) => (page ? { ...page, events: [entry, ...page.events.filter((e) => e.event.eventId !== entry.event.eventId)] } : page));
        } else if (frame.name === 'deliveries') {
          const { eventId, deliveries } = frame.data;
          setRecent((page) => (page ? { ...page, events: page.events.map((e) => (e.event.eventId === eventId ? { ...e, deliveries } : e)) } : page));
          setOlder((list) => list.map((e) => (e.event.eventId === eventId ? { ...e, deliveries } : e)));
        }
      },
      setError,
    );
  }, [session.token, room]);
  const data = recent;
  const cursor = older.length > 0 ? next : data?.next;
  const loadOlder = async () => {
    if (cursor === undefined) return;
    try {
      const page = await api<TimelinePage>(session.token, 'GET', `${path}&from=${encodeURIComponent(cursor)}`);
      setOlder([...older, ...page.events]);
      setNext(page.next);
    } catch (err) {
      setOlderError(errorText(err));
    }
  };
  const seen = new Set<string>();
  const rows = [...(data?.events ?? []), ...older].filter((e) => !seen.has(e.event.eventId) && (seen.add(e.event.eventId), true));
  return html`<section>
    <h1>Room ${room}</h1>
    <p><a href="#/rooms">All rooms</a></p>
    <${ErrorLine} error=${error} />
    <table>
      <caption class="muted">Newest first; each link's delivery state. Live: new events and delivery changes appear as they happen.</caption>
      <thead><tr><th scope="col">Received</th><th scope="col">From</th><th scope="col">Sender</th><th scope="col">Body</th><th scope="col">Relations</th><th scope="col">Deliveries</th><th scope="col">Trace</th></tr></thead>
      <tbody>
        ${rows.map(
          ({ event, deliveries }) => html`<tr>
            <td>${time(event.ts.received)}</td>
            <td>${event.origin.proto} <span class="muted">via ${event.origin.via}</span></td>
            <td>${senderOf(event)}</td>
            <td class="body">${bodyOf(event)}</td>
            <td>${relationsOf(event)}</td>
            <td><ul class="deliveries">${deliveries.map((d) => html`<${DeliveryItem} d=${d} />`)}</ul></td>
            <td><a href=${`#/trace/${encodeURIComponent(event.eventId)}`} aria-label=${`Trace event ${event.eventId}`}>trace</a></td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${data && rows.length === 0 ? html`<p class="muted">No events in this room.</p>` : null}
    <${ErrorLine} error=${olderError} />
    ${cursor !== undefined ? html`<button onClick=${loadOlder}>Older events</button>` : null}
  </section>`;
}

function TracePage({ session, id }: { session: Session; id: string | undefined }): Html {
  const [input, setInput] = useState(id ?? '');
  const [result, setResult] = useState<Trace | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  useEffect(() => {
    if (id === undefined || id === '') return;
    setInput(id);
    let live = true;
    api<Trace>(session.token, 'GET', `/v1/admin/trace/${encodeURIComponent(id)}`)
      .then((t) => live && (setResult(t), setError(undefined)))
      .catch((err: unknown) => live && (setResult(undefined), setError(err instanceof ApiError && err.status === 404 ? `Nothing found for ${id}.` : errorText(err))));
    return () => {
      live = false;
    };
  }, [id, session.token]);
  const submit = (e: Event) => {
    e.preventDefault();
    location.hash = `#/trace/${encodeURIComponent(input.trim())}`;
  };
  return html`<section>
    <h1>Trace</h1>
    <form class="inline" onSubmit=${submit}>
      <label for="trace-id">Event or native id
        <input id="trace-id" size="50" value=${input} onInput=${(e: Event) => setInput((e.target as HTMLInputElement).value)} />
      </label>
      <button type="submit" class="primary">Trace</button>
    </form>
    <${ErrorLine} error=${error} />
    ${result
      ? html`<table>
            <tbody>
              <tr><th scope="row">Event id</th><td>${result.eventId}</td></tr>
              <tr><th scope="row">Room</th><td><a href=${`#/rooms/${encodeURIComponent(result.room)}`}>${result.room}</a></td></tr>
              <tr><th scope="row">Idempotency key</th><td>${result.idempotencyKey}</td></tr>
              <tr><th scope="row">Came from</th><td>${result.origin.proto} via ${result.origin.via}</td></tr>
              <tr><th scope="row">Native ids</th><td>${Object.entries(result.origin.ids).map(([k, v]) => `${k}=${v}`).join(', ')}</td></tr>
              <tr><th scope="row">Received</th><td>${time(result.received)}</td></tr>
              <tr><th scope="row">Sender</th><td>${senderOf(result.event)}</td></tr>
              <tr><th scope="row">Body</th><td class="body">${bodyOf(result.event)}</td></tr>
            </tbody>
          </table>
          <h2>Deliveries</h2>
          <table>
            <thead><tr><th scope="col">Endpoint</th><th scope="col">Target</th><th scope="col">State</th><th scope="col">Native ids</th><th scope="col">Time</th><th scope="col">Error</th></tr></thead>
            <tbody>
              ${result.deliveries.map(
                (d) => html`<tr>
                  <td>${d.endpoint}</td><td>${d.target}</td><td><${StateBadge} state=${d.state} /></td>
                  <td>${Object.entries(d.nativeIds ?? {}).map(([k, v]) => `${k}=${v}`).join(', ')}</td>
                  <td>${time(d.at)}</td><td>${d.error ?? ''}</td>
                </tr>`,
              )}
            </tbody>
          </table>`
      : null}
  </section>`;
}

function DeadLetters({ session }: { session: Session }): Html {
  const [filters, setFilters] = useState({ group: '', room: '', reason: '' });
  const query = new URLSearchParams({ events: 'true', limit: '500', ...Object.fromEntries(Object.entries(filters).filter(([, v]) => v.trim() !== '')) });
  const { data, error, reload } = usePoll(() => api<{ deadLetters: DeadLetter[]; total: number }>(session.token, 'GET', `/v1/admin/dead-letters?${query.toString()}`), [session.token, query.toString()]);
  const [selected, setSelected] = useState<ReadonlySet<string>>(new Set());
  const [message, setMessage] = useState<string | undefined>(undefined);
  const [actionError, setActionError] = useState<string | undefined>(undefined);
  const [confirm, setConfirm] = useState<readonly string[] | undefined>(undefined);
  const viewer = session.who.role !== 'admin';
  const act = async (what: 'replay' | 'drop', ids: readonly string[]) => {
    setActionError(undefined);
    try {
      const res = await api<{ replayed?: number; dropped?: number; requested: number; audit?: { recorded: boolean; error?: string } }>(session.token, 'POST', `/v1/admin/dead-letters/${what}`, { ids });
      const done = what === 'replay' ? `Replayed ${res.replayed ?? 0} of ${res.requested} (sent again in log order).` : `Discarded ${res.dropped ?? 0} of ${res.requested}.`;
      setMessage(res.audit && !res.audit.recorded ? `${done} The audit entry could not be written yet (${res.audit.error ?? 'unknown error'}); the gateway keeps trying.` : done);
      setSelected(new Set());
      reload();
    } catch (err) {
      setActionError(errorText(err));
    }
  };
  const toggle = (id: string) => {
    const next = new Set(selected);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setSelected(next);
  };
  const field = (name: keyof typeof filters, label: string) =>
    html`<label for=${`f-${name}`}>${label}<input id=${`f-${name}`} value=${filters[name]} onChange=${(e: Event) => setFilters({ ...filters, [name]: (e.target as HTMLInputElement).value })} /></label>`;
  return html`<section>
    <h1>Dead letters</h1>
    <form class="inline" onSubmit=${(e: Event) => e.preventDefault()}>
      ${field('group', 'Link (out:adapter)')} ${field('room', 'Room')} ${field('reason', 'Reason contains')}
    </form>
    ${viewer ? html`<p class="muted">Signed in with a viewer token: replay and discard are not available.</p>` : null}
    <div class="actions">
      <button disabled=${viewer || selected.size === 0} onClick=${() => act('replay', [...selected])}>Replay selected</button>
      <button class="danger" disabled=${viewer || selected.size === 0} onClick=${() => setConfirm([...selected])}>Discard selected</button>
    </div>
    ${message !== undefined ? html`<p role="status">${message}</p>` : null}
    <${ErrorLine} error=${actionError ?? error} />
    ${confirm
      ? html`<${Confirm}
          text=${`Discard ${confirm.length} dead letter(s)? They are removed for good and never delivered.`}
          action="Discard"
          onConfirm=${() => {
            const ids = confirm;
            setConfirm(undefined);
            void act('drop', ids);
          }}
          onCancel=${() => setConfirm(undefined)}
        />`
      : null}
    <p class="muted">${data ? `${data.total} dead letter(s)` : 'Loading…'}</p>
    <table>
      <thead><tr><th scope="col">Select</th><th scope="col">Failed at</th><th scope="col">Link</th><th scope="col">Room</th><th scope="col">Body</th><th scope="col">Reason</th><th scope="col">Attempts</th><th scope="col">Payload</th><th scope="col">Actions</th></tr></thead>
      <tbody>
        ${(data?.deadLetters ?? []).map(
          (d) => html`<tr>
            <td><input type="checkbox" aria-label=${`Select dead letter ${d.id}`} checked=${selected.has(d.id)} onChange=${() => toggle(d.id)} /></td>
            <td>${time(d.ts)}</td>
            <td>${d.group.replace(/^out:/, '')}</td>
            <td><a href=${`#/rooms/${encodeURIComponent(d.room)}`}>${d.room}</a></td>
            <td class="body">${d.event ? bodyOf(d.event) : '(removed by retention)'}</td>
            <td>${d.reason}</td>
            <td>${d.attempts}</td>
            <td><details><summary>event ${d.eventId}</summary><pre>${JSON.stringify(d.event ?? null, null, 2)}</pre></details></td>
            <td>
              <button disabled=${viewer} onClick=${() => act('replay', [d.id])}>Replay</button>
              <button class="danger" disabled=${viewer} onClick=${() => setConfirm([d.id])}>Discard</button>
            </td>
          </tr>`,
        )}
      </tbody>
    </table>
    <${AuditTrail} session=${session} />
  </section>`;
}

/** Who replayed or discarded what, and when (GET /v1/admin/audit), under Dead letters. */
function AuditTrail({ session }: { session: Session }): Html {
  const { data, error } = usePoll(() => api<{ entries: AuditEntry[] }>(session.token, 'GET', '/v1/admin/audit?limit=50'), [session.token]);
  const names: Record<AuditEntry['action'], string> = { 'dead-letters.replay': 'replay', 'dead-letters.drop': 'discard' };
  return html`<section aria-labelledby="audit-heading">
    <h2 id="audit-heading">Audit log</h2>
    <${ErrorLine} error=${error} />
    <table aria-label="Audit log">
      <caption class="muted">Replays and discards, newest first, with who did them (the newest 1,000 are kept).</caption>
      <thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">Action</th><th scope="col">Dead letters</th><th scope="col">Done</th></tr></thead>
      <tbody>
        ${(data?.entries ?? []).map(
          (e) => html`<tr>
            <td>${time(e.at)}</td>
            <td>${e.by}</td>
            <td>${names[e.action]}</td>
            <td>${e.selection?.all === true ? `all${e.selection.group !== undefined ? ` of ${e.selection.group}` : ''} (${e.count})` : `${e.ids.join(', ')}${e.count > e.ids.length ? ` and ${e.count - e.ids.length} more` : ''}`}</td>
            <td>${e.done} of ${e.count}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${data && data.entries.length === 0 ? html`<p class="muted">No replay or discard yet.</p>` : null}
  </section>`;
}

function Rules({ session }: { session: Session }): Html {
  const [form, setForm] = useState({ filter: 'sensors/+device/alert', options: '{"decode": "json", "template": "{{device}}: {{level}}"}', topic: 'sensors/pump-7/alert', payload: '{"level": "high"}' });
  const [result, setResult] = useState<RuleResult | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    let options: unknown;
    try {
      options = form.options.trim() === '' ? undefined : JSON.parse(form.options);
    } catch {
      setError('Options must be a JSON object, e.g. {"decode": "json"}.');
      return;
    }
    try {
      setResult(await api<RuleResult>(session.token, 'POST', '/v1/admin/rules/test', { filter: form.filter, topic: form.topic, payload: form.payload, ...(options !== undefined ? { options } : {}) }));
    } catch (err) {
      setResult(undefined);
      setError(errorText(err));
    }
  };
  const input = (name: keyof typeof form, label: string, area = false) => {
    const onInput = (e: Event) => setForm({ ...form, [name]: (e.target as HTMLInputElement).value });
    return html`<label for=${`r-${name}`}>${label}${area ? html`<textarea id=${`r-${name}`} rows="4" cols="60" value=${form[name]} onInput=${onInput} />` : html`<input id=${`r-${name}`} size="40" value=${form[name]} onInput=${onInput} />`}</label>`;
  };
  return html`<section>
    <h1>Rules</h1>
    <p class="muted">An MQTT rule (a link's topic filter and options) run on a sample message: what it would put in the room, or why not. Nothing is sent or stored.</p>
    <form onSubmit=${submit}>
      ${input('filter', 'Topic filter')} ${input('topic', 'Sample topic')}<br />
      ${input('options', 'Options (JSON)', true)} ${input('payload', 'Sample payload', true)}<br />
      <button type="submit" class="primary">Test rule</button>
    </form>
    <${ErrorLine} error=${error} />
    ${result
      ? html`<h2>Result</h2>
          ${result.error !== undefined ? html`<p class="error" role="alert">${result.matched ? 'Matched, but nothing would be ingested: ' : 'No match: '}${result.error}</p>` : null}
          ${result.message !== undefined ? html`<p>It would ingest:</p><pre>${JSON.stringify(result.message, null, 2)}</pre>` : null}`
      : null}
  </section>`;
}

function Devices({ session }: { session: Session }): Html {
  const { data, error, reload } = usePoll(() => api<{ devices: Device[] }>(session.token, 'GET', '/v1/admin/devices/lag'), [session.token], 5000);
  const [confirm, setConfirm] = useState<Device | undefined>(undefined);
  const [actionError, setActionError] = useState<string | undefined>(undefined);
  const viewer = session.who.role !== 'admin';
  const revoke = async (d: Device) => {
    try {
      await api(session.token, 'DELETE', `/v1/admin/devices/${encodeURIComponent(d.deviceId)}`);
      reload();
    } catch (err) {
      setActionError(errorText(err));
    }
  };
  return html`<section>
    <h1>Devices</h1>
    <${ErrorLine} error=${actionError ?? error} />
    ${confirm
      ? html`<${Confirm}
          text=${`Revoke device ${confirm.deviceId} of ${confirm.user}? Its token stops working at once.`}
          action="Revoke"
          onConfirm=${() => {
            const d = confirm;
            setConfirm(undefined);
            void revoke(d);
          }}
          onCancel=${() => setConfirm(undefined)}
        />`
      : null}
    <table>
      <caption class="muted">A device is placed by the cursor of its last sync; its lag is the age of the oldest event after it in its rooms.</caption>
      <thead><tr><th scope="col">Device</th><th scope="col">User</th><th scope="col">Name</th><th scope="col">Last sync</th><th scope="col">Events behind</th><th scope="col">Lag (seconds)</th><th scope="col">Actions</th></tr></thead>
      <tbody>
        ${(data?.devices ?? []).map(
          (d) => html`<tr>
            <th scope="row">${d.deviceId}</th><td>${d.user}</td><td>${d.name ?? ''}</td>
            <td>${d.lastSyncAt !== undefined ? time(d.lastSyncAt) : 'never'}</td>
            <td>${d.events !== undefined ? (d.events >= 1000 ? '1000+' : String(d.events)) : ''}</td>
            <td>${d.seconds !== undefined ? seconds(d.seconds) : ''}</td>
            <td><button class="danger" disabled=${viewer} onClick=${() => setConfirm(d)}>Revoke</button></td>
          </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

// --- the shell

function Shell({ session, onSignOut }: { session: Session; onSignOut: () => void }): Html {
  const [page = 'overview', arg] = useHash();
  const current = PAGES.some((p) => p.path === page) ? page : 'overview';
  let body: Html;
  if (current === 'rooms' && arg !== undefined) body = html`<${Timeline} session=${session} room=${arg} />`;
  else if (current === 'rooms') body = html`<${Rooms} session=${session} />`;
  else if (current === 'trace') body = html`<${TracePage} session=${session} id=${arg} />`;
  else if (current === 'dead-letters') body = html`<${DeadLetters} session=${session} />`;
  else if (current === 'rules') body = html`<${Rules} session=${session} />`;
  else if (current === 'devices') body = html`<${Devices} session=${session} />`;
  else body = html`<${Overview} session=${session} />`;
  return html`<header>
      <span class="brand">syncgate</span>
      <nav aria-label="Console">
        <ul>
          ${PAGES.map((p) => html`<li><a href=${`#/${p.path}`} aria-current=${p.path === current ? 'page' : undefined}>${p.name}</a></li>`)}
        </ul>
      </nav>
      <span class="who">${session.who.role === 'admin' ? 'admin' : `viewer (read-only): ${session.who.name}`}<button onClick=${onSignOut}>Sign out</button></span>
    </header>
    <main>${body}</main>`;
}

function App(): Html {
  const [session, setSession] = useState<Session | undefined>(undefined);
  const [checking, setChecking] = useState(storedToken() !== undefined);
  useEffect(() => {
    const token = storedToken();
    if (token === undefined) return;
    api<Identity>(token, 'GET', '/v1/admin/whoami')
      .then((who) => setSession({ token, who }))
      .catch(() => storeToken(undefined))
      .finally(() => setChecking(false));
  }, []);
  if (checking) return html`<main><p class="muted">Signing in…</p></main>`;
  if (!session) return html`<${SignIn} onSignedIn=${setSession} />`;
  return html`<${Shell}
    session=${session}
    onSignOut=${() => {
      storeToken(undefined);
      setSession(undefined);
    }}
  />`;
}

const root = document.getElementById('app');
if (root) render(html`<${App} />`, root);
