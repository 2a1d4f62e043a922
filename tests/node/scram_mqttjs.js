// SCRAM-SHA-256 enhanced authentication with MQTT.js (npm `mqtt`), a client nobody here
// wrote, and a third SCRAM implementation (Node's crypto), against the real broker and
// `tandem-auth-file`. Run by tests/tests/mqttjs_scram.rs:
//
//     node scram_mqttjs.js HOST PORT USER PASSWORD (right | wrong)
//
// `right`: the exchange lets the client in, the CONNACK's server-final proves the server
// knows the keys, then a re-authentication (AUTH 0x19) ends with AUTH 0x00 and a verified
// server-final again. `wrong`: CONNACK 0x86. Prints "ok MODE" and exits 0, else exits 1.
// MQTT.js has no public call to start a re-authentication; its own encoder sends the AUTH.
'use strict';

const crypto = require('crypto');
const mqtt = require('mqtt');

const [host, port, user, password, mode] = process.argv.slice(2);
const METHOD = 'SCRAM-SHA-256';
const DEADLINE_MS = 20000;

function fail(why) {
  console.error(`FAIL ${mode}: ${why}`);
  process.exit(1);
}
setTimeout(() => fail('no outcome within the deadline'), DEADLINE_MS).unref();

const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();
const sha256 = (data) => crypto.createHash('sha256').update(data).digest();

// One SCRAM-SHA-256 client exchange (RFC 5802, RFC 7677).
function scram() {
  const nonce = crypto.randomBytes(18).toString('base64');
  const first = `n=${user.replace(/=/g, '=3D').replace(/,/g, '=2C')},r=${nonce}`;
  let expected;
  return {
    clientFirst: Buffer.from(`n,,${first}`),
    clientFinal(serverFirst) {
      const s = serverFirst.toString();
      const attrs = Object.fromEntries(s.split(',').map((kv) => [kv[0], kv.slice(2)]));
      if (!attrs.r || !attrs.r.startsWith(nonce)) fail(`server nonce ${attrs.r} does not extend ours`);
      const iterations = Number(attrs.i);
      if (!(iterations >= 4096)) fail(`iterations ${attrs.i}`);
      const salted = crypto.pbkdf2Sync(password, Buffer.from(attrs.s, 'base64'), iterations, 32, 'sha256');
      const clientKey = hmac(salted, 'Client Key');
      const withoutProof = `c=${Buffer.from('n,,').toString('base64')},r=${attrs.r}`;
      const authMessage = `${first},${s},${withoutProof}`;
      const signature = hmac(sha256(clientKey), authMessage);
      const proof = Buffer.from(clientKey.map((b, i) => b ^ signature[i]));
      expected = hmac(hmac(salted, 'Server Key'), authMessage).toString('base64');
      return Buffer.from(`${withoutProof},p=${proof.toString('base64')}`);
    },
    verify(serverFinal) {
      const s = serverFinal ? serverFinal.toString() : '';
      if (s !== `v=${expected}`) fail(`server-final ${s} is not v=${expected}`);
    },
  };
}

let exchange = scram();
let phase = 'connect';
const client = mqtt.connect({
  host,
  port: Number(port),
  protocolVersion: 5,
  clientId: `mqttjs-${mode}`,
  reconnectPeriod: 0,
  properties: { authenticationMethod: METHOD, authenticationData: exchange.clientFirst },
});

// The broker's AUTH packets: 0x18 carries server-first (answered with client-final),
// 0x00 ends a re-authentication.
client.handleAuth = (packet, callback) => {
  const data = packet.properties && packet.properties.authenticationData;
  if (packet.reasonCode === 0x18) {
    callback(null, {
      cmd: 'auth',
      reasonCode: 0x18,
      properties: { authenticationMethod: METHOD, authenticationData: exchange.clientFinal(data) },
    });
  } else if (packet.reasonCode === 0 && phase === 'reauth') {
    exchange.verify(data);
    phase = 'done';
    callback();
    client.end(() => {
      console.log(`ok ${mode}`);
      process.exit(0);
    });
  } else {
    callback();
  }
};

client.on('connect', (connack) => {
  if (mode !== 'right') fail(`let in with ${mode} password`);
  const p = connack.properties || {};
  if (p.authenticationMethod !== METHOD) fail(`CONNACK method ${p.authenticationMethod}`);
  exchange.verify(p.authenticationData);
  // Re-authenticate on the live connection.
  phase = 'reauth';
  exchange = scram();
  client._sendPacket({
    cmd: 'auth',
    reasonCode: 0x19,
    properties: { authenticationMethod: METHOD, authenticationData: exchange.clientFirst },
  });
});

client.on('error', (err) => {
  if (mode === 'wrong' && err.code === 0x86) {
    console.log(`ok ${mode}`);
    process.exit(0);
  }
  fail(`error ${err.code}: ${err.message}`);
});
