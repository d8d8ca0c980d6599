#!/usr/bin/env node
// A client that knows nothing of StraightLine's contracts: it asks the server for them by
// gRPC server reflection (v1, the vendored reflection.proto) and calls what it finds. Every
// command prints JSON, one object per line.
//
//   node reflect.js --server HOST:PORT services
//   node reflect.js --server HOST:PORT call SERVICE/METHOD [--request JSON] [--role client]
//
// `services` lists the services the server offers (reflection needs no credentials); `call`
// fetches the file declaring SERVICE and every file it imports, loads them with
// @grpc/proto-loader, and makes one unary call with the role's credentials (channel.js).

"use strict";

const path = require("path");
const { parseArgs } = require("util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const descriptor = require("protobufjs/ext/descriptor");
const { channelTo } = require("./channel");

const LOAD_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true };
const REFLECTION = grpc.loadPackageDefinition(
  protoLoader.loadSync("grpc/reflection/v1/reflection.proto", {
    ...LOAD_OPTIONS,
    includeDirs: [path.join(__dirname, "vendor")],
  }),
).grpc.reflection.v1.ServerReflection;

/** One reflection request on a stream of its own; its answer. */
function ask(client, request) {
  return new Promise((resolve, reject) => {
    const stream = client.ServerReflectionInfo({ deadline: Date.now() + 10_000 });
    stream.on("data", (response) => {
      if (response.error_response) {
        reject(new Error(`reflection: ${response.error_response.error_message}`));
      } else {
        resolve(response);
      }
      stream.end();
    });
    stream.on("error", reject);
    stream.write(request);
  });
}

/** The serialized FileDescriptorProtos of the file declaring `symbol` and all it imports. */
async function filesFor(client, symbol) {
  const files = new Map();
  const pending = [{ file_containing_symbol: symbol }];
  while (pending.length) {
    const response = await ask(client, pending.pop());
    for (const bytes of response.file_descriptor_response.file_descriptor_proto) {
      const file = descriptor.FileDescriptorProto.decode(bytes);
      if (!files.has(file.name)) {
        files.set(file.name, bytes);
        for (const imported of file.dependency) {
          if (!files.has(imported)) pending.push({ file_by_filename: imported });
        }
      }
    }
  }
  return [...files.values()];
}

/** A FileDescriptorSet (field 1: repeated FileDescriptorProto) of serialized files. */
function descriptorSet(files) {
  const writer = descriptor.FileDescriptorSet.encode({ file: [] });
  for (const bytes of files) writer.uint32(10).bytes(bytes);
  return Buffer.from(writer.finish());
}

async function services(reflection) {
  const response = await ask(reflection, { list_services: "" });
  for (const service of response.list_services_response.service) {
    process.stdout.write(JSON.stringify({ service: service.name }) + "\n");
  }
}

async function call(reflection, values, address) {
  const [serviceName, method] = values.method.split("/");
  const files = await filesFor(reflection, serviceName);
  const definition = protoLoader.loadFileDescriptorSetFromBuffer(descriptorSet(files), LOAD_OPTIONS);
  const Service = serviceName.split(".").reduce((node, part) => node[part], grpc.loadPackageDefinition(definition));
  const { target, credentials, options } = channelTo(address, values.role);
  const client = new Service(target, credentials, options);
  try {
    const answer = await new Promise((resolve, reject) =>
      client[method](JSON.parse(values.request), { deadline: Date.now() + 30_000 }, (error, response) =>
        error ? reject(error) : resolve(response),
      ),
    );
    process.stdout.write(JSON.stringify(answer) + "\n");
  } finally {
    client.close();
  }
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      server: { type: "string", default: "127.0.0.1:50051" },
      request: { type: "string", default: "{}" },
      role: { type: "string", default: "client" },
    },
  });
  const reflection = new REFLECTION(values.server, grpc.credentials.createInsecure());
  try {
    if (positionals[0] === "services") {
      await services(reflection);
    } else if (positionals[0] === "call" && positionals[1]) {
      await call(reflection, { ...values, method: positionals[1] }, values.server);
    } else {
      throw new Error("name a command: services, or call SERVICE/METHOD");
    }
  } finally {
    reflection.close();
  }
}

main().catch((error) => {
  process.stderr.write(`reflect: ${error.details || error.message}\n`);
  process.exit(1);
});
