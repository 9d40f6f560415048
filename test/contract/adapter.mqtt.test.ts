// The adapter contract on the MQTT adapter against a real Mosquitto.
import { connectAsync, type MqttClient } from 'mqtt';
import { startMosquitto, type MosquittoBroker } from '../harness/mosquitto.js';
import { adapterContract, until } from './adapter.contract.js';

let broker: MosquittoBroker;
let seq = 0;

adapterContract({
  type: 'mqtt',
  async start() {
    broker = await startMosquitto({ useEnv: false });
  },
  stop: async () => broker?.stop(),
  port: () => broker.port,
  async world(room, proxy) {
    seq++;
    const topicRoot = `contract/${process.pid}/${seq}`;
    const clients: MqttClient[] = [];
    const client = async () => {
      const c = await connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 200, connectTimeout: 15_000 });
      clients.push(c);
      return c;
    };
    const device = await client();
    const observer = await client();
    const received: Array<{ body: string; eventId: string | undefined }> = [];
    observer.on('message', (_topic, payload, packet) => {
      const eid = packet.properties?.userProperties?.['sg-eid'];
      const body = (JSON.parse(payload.toString('utf8')) as { content?: { body?: string } }).content?.body;
      if (body !== undefined) received.push({ body, eventId: Array.isArray(eid) ? eid[0] : eid });
    });
    await observer.subscribeAsync(`sg/v1/rooms/${room}/out`, { qos: 1 });
    return {
      config: { url: proxy.url('mqtt'), clientId: `sg-contract-${process.pid}-${seq}`, reconnect: { minMs: 100, maxMs: 1000 } },
      link: { endpoint: 'mqtt', target: `${topicRoot}/+device/say`, options: { decode: 'text', throttleMs: 0 } },
      peer: {
        send: async (body) => void (await device.publishAsync(`${topicRoot}/dev1/say`, body, { qos: 1 })),
        received: () => received,
      },
      // Someone republishing our publication with its sg-eid (No Local keeps our own from us).
      async echo(delivered) {
        const body = 'content' in delivered ? delivered.content.body : '';
        await device.publishAsync(`${topicRoot}/relay/say`, body, { qos: 1, properties: { userProperties: { 'sg-eid': delivered.eventId } } });
      },
      // A device publishing the same message (same sg-msgid) twice, as after a lost PUBACK.
      async sendTwice(body, harness) {
        const properties = { userProperties: { 'sg-msgid': `m-${process.pid}-${seq}` } };
        await device.publishAsync(`${topicRoot}/dev1/say`, body, { qos: 1, properties });
        await harness.untilLogged(body);
        await device.publishAsync(`${topicRoot}/dev1/say`, body, { qos: 1, properties });
        await until(() => harness.ingested(body) >= 2, 'the adapter to hand the second copy to the sink');
      },
      async close() {
        await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
      },
    };
  },
});
