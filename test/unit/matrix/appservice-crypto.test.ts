/**
 * Our device's share of an appservice transaction's E2EE fields
 * (adapters/matrix/crypto/appservice.ts), as Synapse sends them.
 */
import { describe, expect, it } from 'vitest';
import { PROBE_TYPE, transactionCrypto } from '../../../adapters/matrix/crypto/appservice.js';

const BOT = '@bridge:x';

describe('transactionCrypto', () => {
  it('takes the to-device messages addressed to our device (without the routing fields) and leaves others\' and our probes out of the machine\'s input', () => {
    const parts = transactionCrypto(
      {
        events: [],
        'de.sorunome.msc2409.to_device': [
          { type: 'm.room.encrypted', sender: '@alice:x', content: { ciphertext: 'c1' }, to_user_id: BOT, to_device_id: 'DEV' },
          { type: 'm.room.encrypted', sender: '@alice:x', content: { ciphertext: 'other device' }, to_user_id: BOT, to_device_id: 'OLD' },
          { type: 'm.room.encrypted', sender: '@alice:x', content: { ciphertext: 'a ghost' }, to_user_id: '@_sg_carol:x', to_device_id: 'DEV' },
          { type: PROBE_TYPE, sender: BOT, content: { nonce: 'n1' }, to_user_id: BOT, to_device_id: 'DEV' },
          { type: PROBE_TYPE, sender: '@alice:x', content: { nonce: 'forged' }, to_user_id: BOT, to_device_id: 'DEV' },
        ],
      },
      BOT,
      'DEV',
    );
    expect(parts.sync['to_device']).toEqual({ events: [{ type: 'm.room.encrypted', sender: '@alice:x', content: { ciphertext: 'c1' } }] });
    expect(parts.probes).toEqual(['n1']);
    expect(parts.any).toBe(true);
    expect(parts.counts).toBe(false);
  });

  it('reads the MSC3202 key counts under either name, fallback key types and device lists, per user and device', () => {
    const counts = { [BOT]: { DEV: { signed_curve25519: 12 }, OLD: { signed_curve25519: 1 } } };
    for (const name of ['org.matrix.msc3202.device_one_time_keys_count', 'org.matrix.msc3202.device_one_time_key_counts']) {
      const parts = transactionCrypto(
        {
          events: [],
          [name]: counts,
          'org.matrix.msc3202.device_unused_fallback_key_types': { [BOT]: { DEV: ['signed_curve25519'] } },
          'org.matrix.msc3202.device_lists': { changed: ['@alice:x'], left: [] },
        },
        BOT,
        'DEV',
      );
      expect(parts.counts).toBe(true);
      expect(parts.sync).toEqual({
        to_device: { events: [] },
        device_one_time_keys_count: { signed_curve25519: 12 },
        device_unused_fallback_key_types: ['signed_curve25519'],
        device_lists: { changed: ['@alice:x'], left: [] },
      });
    }
  });

  it('has nothing for our device in a plain transaction (no fallback field: unknown, not "all used")', () => {
    const parts = transactionCrypto({ events: [{ type: 'm.room.message' }] }, BOT, 'DEV');
    expect(parts).toEqual({ sync: { to_device: { events: [] } }, any: false, probes: [], counts: false });
  });
});
