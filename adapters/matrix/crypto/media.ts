/**
 * Encrypted attachments coming in, and how other protocols' clients get them.
 *
 * When an encrypted event brings a file (`content.file`), `admit` downloads
 * the ciphertext from the media repository, checks its SHA-256 and decrypts
 * it once (so a wrong or missing file is marked in the log at once, never
 * bridged as garbage), then keeps the EncryptedFile — mxc URL, key, IV,
 * hash, with the Matrix room and the gateway room it belongs to — in the
 * sealed state store (encrypted at rest, shared by the replicas) under an id
 * derived from the event. The attachment's URL is the gateway's media route
 * for that id (GET /v1/media/{adapter}/{id}): `serve` fetches, checks and
 * decrypts again on each request, so no plaintext is stored anywhere, and
 * answers only while the Matrix room is still linked to that gateway room.
 * The id is 128 random-looking bits that appear only in that room's events:
 * the URL is a capability, like an XEP-0363 upload URL.
 */
import { createHash } from 'node:crypto';
import type { LinkView } from '../../../src/core/adapter.js';
import type { SealedStore } from '../../../src/core/ports.js';
import type { MatrixHttp } from '../client.js';
import { MatrixApiError, MatrixNetworkError } from '../errors.js';
import { AttachmentHashMismatchError, decryptAttachment, parseEncryptedFile, type EncryptedFile } from './attachments.js';

/** What an encrypted attachment that cannot be given to the room's other protocols is marked with. */
export type AttachmentFailure = 'attachment-hash-mismatch' | 'attachment-unavailable';

export interface AdmittedFile {
  readonly url: string;
}

export interface RejectedFile {
  readonly failure: AttachmentFailure;
  readonly detail: string;
}

/** A decrypted attachment, as the gateway's media route sends it. */
export interface MediaFile {
  readonly data: Buffer;
  readonly contentType: string;
  readonly name?: string;
}

interface StoredFile {
  readonly file: EncryptedFile;
  readonly roomId: string;
  readonly room: string;
  readonly mime?: string;
  readonly name?: string;
}

export interface EncryptedMediaDeps {
  readonly adapter: string;
  readonly http: MatrixHttp;
  readonly links: LinkView;
  /** the sealed namespace the files' keys are kept in (undefined: no store secret, nothing admitted) */
  readonly store: SealedStore | undefined;
  /** `encryptedMediaBaseUrl`, or the route's path */
  readonly baseUrl: string;
  readonly maxBytes: number;
}

/** Downloads a little harder than one try: a blip of the homeserver should not mark a file unreadable for good. */
const DOWNLOAD_ATTEMPTS = 3;

export class EncryptedMedia {
  constructor(private readonly deps: EncryptedMediaDeps) {}

  /** The id of the `index`th file of a Matrix event: the same on a replay, so a repeated ingest makes the same URL. */
  static idOf(mxEventId: string, index: number): string {
    return createHash('sha256').update(`matrix-encrypted-file\n${mxEventId}\n${index}`).digest('base64url').slice(0, 22);
  }

  /** Fetches, checks and decrypts the file once; keeps its key and answers the attachment URL, or why it cannot be given. */
  async admit(args: { mxEventId: string; index: number; roomId: string; room: string; file: EncryptedFile; mime?: string; name?: string }): Promise<AdmittedFile | RejectedFile> {
    const store = this.deps.store;
    if (!store) return { failure: 'attachment-unavailable', detail: 'no encryption.storeSecret: encrypted attachments are not kept' };
    try {
      await this.fetchPlain(args.file);
    } catch (err) {
      const failure: AttachmentFailure = err instanceof AttachmentHashMismatchError ? 'attachment-hash-mismatch' : 'attachment-unavailable';
      return { failure, detail: err instanceof Error ? err.message : String(err) };
    }
    const id = EncryptedMedia.idOf(args.mxEventId, args.index);
    const stored: StoredFile = { file: args.file, roomId: args.roomId, room: args.room, ...(args.mime !== undefined ? { mime: args.mime } : {}), ...(args.name !== undefined ? { name: args.name } : {}) };
    await store.set(id, Buffer.from(JSON.stringify(stored)));
    return { url: `${this.deps.baseUrl.replace(/\/+$/, '')}/${id}` };
  }

  /**
   * The decrypted file behind `id`, or undefined when there is none or its
   * Matrix room is no longer linked to the gateway room it was bridged into.
   * Throws when the homeserver cannot give it or the hash does not match.
   */
  async serve(id: string): Promise<MediaFile | undefined> {
    const store = this.deps.store;
    if (!store || !/^[A-Za-z0-9_-]{22}$/.test(id)) return undefined;
    const raw = await store.get(id);
    if (!raw) return undefined;
    const stored = JSON.parse(Buffer.from(raw).toString('utf8')) as StoredFile;
    if (!this.deps.links.roomsFor(this.deps.adapter, stored.roomId).includes(stored.room)) return undefined;
    const parsed = parseEncryptedFile(stored.file);
    if ('problem' in parsed) return undefined;
    const data = await this.fetchPlain(parsed.file);
    return { data, contentType: stored.mime ?? 'application/octet-stream', ...(stored.name !== undefined ? { name: stored.name } : {}) };
  }

  private async fetchPlain(file: EncryptedFile): Promise<Buffer> {
    for (let attempt = 1; ; attempt++) {
      try {
        const { data } = await this.deps.http.download(file.url, this.deps.maxBytes);
        return decryptAttachment(data, file);
      } catch (err) {
        const transient = err instanceof MatrixNetworkError || (err instanceof MatrixApiError && (err.status >= 500 || err.rateLimited));
        if (!transient || attempt >= DOWNLOAD_ATTEMPTS) throw err;
        const wait = err instanceof MatrixApiError && err.retryAfterMs !== undefined ? Math.min(err.retryAfterMs, 5_000) : 250 * attempt;
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }
}
