#!/usr/bin/env node
// A StraightLine client in Node.js: the v1 contracts loaded from protos/ at run time
// (@grpc/proto-loader), no generated code. Every command prints JSON, one object per line.
//
//   node placer_client.js [--placer HOST:PORT] policy
//   node placer_client.js place --model NAME --bytes N
//   node placer_client.js infer --model NAME --image FILE [--content-type image/png] [--top-k K]
//   node placer_client.js watch [--count N] [--timeout S]    (S seconds at most; default 30)
//   node placer_client.js register --instance-id ID --platform FLASK|DOCKER|SERVERLESS
//       --address HOST:PORT --capacity N --model NAME [--seconds S]
//
// `register` is what an adapter written in any language does: a bidirectional Heartbeat
// stream of reports, answered with acknowledgements, ended with a `leaving` report.
//
// Credentials and several placers as every StraightLine client in Node: channel.js.

"use strict";

const fs = require("fs");
const path = require("path");
const { parseArgs } = require("util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const { channelTo } = require("./channel");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");

function placerClient(address, role) {
  const definition = protoLoader.loadSync("straightline/v1/placer.proto", {
    includeDirs: [PROTOS],
    keepCase: true, // field names as in the .proto files
    longs: String,
    enums: String,
    defaults: true,
  });
  const { PlacerService } = grpc.loadPackageDefinition(definition).straightline.v1;
  const { target, credentials, options } = channelTo(address, role);
  return new PlacerService(target, credentials, options);
}

function unary(client, method, request, timeoutSeconds = 30) {
  const deadline = new Date(Date.now() + timeoutSeconds * 1000);
  return new Promise((resolve, reject) => {
    client[method](request, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

function print(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

const COMMANDS = {
  async policy(client) {
    print((await unary(client, "GetPolicy", {})).policy);
  },

  async place(client, options) {
    const request = {
      model: { name: options.model },
      data_size_bytes: String(Number(options.bytes)),
    };
    print((await unary(client, "Place", request)).placement);
  },

  async infer(client, options) {
    const request = {
      model: { name: options.model },
      payload: fs.readFileSync(options.image),
      content_type: options["content-type"],
      top_k: Number(options["top-k"]),
    };
    const answer = await unary(client, "Infer", request, 60);
    print({
      served_platform: answer.served_platform,
      branch: answer.placement.branch,
      fell_back: answer.fell_back,
      classes: answer.classes,
      model: answer.model,
    });
  },

  async watch(client, options) {
    const wanted = Number(options.count);
    const seconds = Number(options.timeout);
    const deadline = new Date(Date.now() + seconds * 1000);
    const stream = client.WatchResources({ min_interval: { nanos: 100000000 } }, { deadline });
    let seen = 0;
    await new Promise((resolve, reject) => {
      stream.on("data", (snapshot) => {
        print(snapshot);
        seen += 1;
        if (seen === wanted) {
          stream.cancel();
          resolve();
        }
      });
      stream.on("error", (error) => {
        if (error.code === grpc.status.CANCELLED) {
          resolve();
        } else if (error.code === grpc.status.DEADLINE_EXCEEDED) {
          reject(new Error(`${seen} of ${wanted} snapshot(s) within ${seconds} s; is the placer changing?`));
        } else {
          reject(error);
        }
      });
    });
  },

  async register(client, options) {
    const report = {
      instance_id: options["instance-id"],
      platform: `PLATFORM_${options.platform}`,
      address: options.address,
      capacity_total: Number(options.capacity),
      capacity_free: Number(options.capacity),
      models: [{ name: options.model }],
    };
    const stream = client.Heartbeat();
    const acknowledged = [];
    const ended = new Promise((resolve, reject) => {
      stream.on("data", (ack) => acknowledged.push(ack));
      stream.on("error", reject);
      stream.on("end", resolve);
    });
    const stopAt = Date.now() + Number(options.seconds) * 1000;
    let sequence = 1;
    for (; Date.now() < stopAt; sequence += 1) {
      stream.write({ report: { ...report, sequence: String(sequence) } });
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    stream.write({ report: { ...report, sequence: String(sequence) }, leaving: true });
    stream.end();
    await ended;
    print({ acknowledged: acknowledged.length, last: acknowledged[acknowledged.length - 1] });
  },
};

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      placer: { type: "string", default: "127.0.0.1:50051" },
      model: { type: "string", default: "demo" },
      bytes: { type: "string", default: "0" },
      image: { type: "string" },
      "content-type": { type: "string", default: "image/jpeg" },
      "top-k": { type: "string", default: "3" },
      count: { type: "string", default: "1" },
      timeout: { type: "string", default: "30" },
      "instance-id": { type: "string", default: "node-instance" },
      platform: { type: "string", default: "FLASK" },
      address: { type: "string", default: "127.0.0.1:0" },
      capacity: { type: "string", default: "1" },
      seconds: { type: "string", default: "2" },
    },
  });
  const command = COMMANDS[positionals[0]];
  if (!command) {
    throw new Error(`name a command: ${Object.keys(COMMANDS).join(", ")}`);
  }
  const client = placerClient(values.placer, positionals[0] === "register" ? "adapter" : "client");
  try {
    await command(client, values);
  } finally {
    client.close();
  }
}

main().catch((error) => {
  process.stderr.write(`placer_client: ${error.details || error.message}\n`);
  process.exit(1);
});
