// Checks the ejabberd harness: a private node (own name, cookie, loopback
// ports), accounts registered with ejabberdctl, c2s login without TLS, MUC
// with stanza-ids and archive, and a restart that keeps accounts and rooms.
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEjabberd, type EjabberdServer } from '../harness/ejabberd.js';
import { NS, TestUser, endUsers } from './xmpp/helpers.js';

let server: EjabberdServer;

beforeAll(async () => {
  server = await startEjabberd();
  await Promise.all([server.createUser('alice', 'alice-secret'), server.createUser('bob', 'bob-secret')]);
});

afterAll(async () => {
  await endUsers();
  await server?.stop();
});

describe('ejabberd harness', () => {
  it('runs its own node with its own cookie, on loopback ports only', async () => {
    const cfg = await readFile(join(dirname(server.configPath), 'ejabberdctl.cfg'), 'utf8');
    expect(cfg).toMatch(/^ERLANG_NODE=sg[0-9a-f]{8}@localhost$/m);
    expect(cfg).toMatch(/-setcookie sg[0-9a-f]{24}/);
    expect(cfg).not.toMatch(/ERLANG_NODE=ejabberd@/);
    const yml = await readFile(server.configPath, 'utf8');
    expect(yml.match(/^\s+ip: (.*)$/gm)?.map((l) => l.trim())).toEqual(['ip: "127.0.0.1"']);
    expect(server.kind).toBe('ejabberd');
    // ejabberdctl with the harness's config dir reaches this node, and registered our users there.
    expect(await server.ctl(['status'])).toContain(`The node ${server.node} is started`);
    expect((await server.ctl(['registered_users', server.domain])).split('\n').filter(Boolean).sort()).toEqual(['alice', 'bob']);
    expect(server.version).toMatch(/^\d+\.\d+/);
  });

  it('logs in registered users, keeps a MUC with stanza-ids and an archive, and keeps them over a restart', async () => {
    const room = `h-${randomUUID().slice(0, 8)}@${server.mucDomain}`;
    const alice = await TestUser.login(server, 'alice', 'alice-secret');
    await alice.join(room, 'Alice');
    const id = await alice.say(room, 'before restart');
    const sid = await alice.reflectionOf(room, id);
    expect(sid).toBeTruthy();
    await server.restart();
    const bob = await TestUser.login(server, 'bob', 'bob-secret');
    const archived = await bob.roomArchive(room);
    expect(archived.map((a) => a.message.getChildText('body'))).toContain('before restart');
    expect(archived.find((a) => a.message.getChildText('body') === 'before restart')?.id).toBe(sid);
    await bob.join(room, 'Bob');
    expect(bob.joined.has(room)).toBe(true);
    expect(NS.mam).toBe('urn:xmpp:mam:2');
  });
});
