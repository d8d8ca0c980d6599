// How every StraightLine client in Node reaches a service: the target (one server, or several
// that gRPC balances over), the caller's credentials and the channel options.
//
// Credentials: with STRAIGHTLINE_TLS_CERT, _KEY and _CLIENT_CA, mutual TLS with that
// certificate (its role is in the certificate); otherwise the role's bearer token from the
// deployment's tokens file, STRAIGHTLINE_TOKENS_FILE or $XDG_STATE_HOME/straightline/tokens.json.

"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const grpc = require("@grpc/grpc-js");

// Round robin over several placers, a call that finds one down retried on another: the
// service config every StraightLine client uses (deploy/placers.service-config.json).
const SEVERAL_PLACERS = path.resolve(__dirname, "..", "..", "deploy", "placers.service-config.json");

function tokensFile() {
  if (process.env.STRAIGHTLINE_TOKENS_FILE) {
    return process.env.STRAIGHTLINE_TOKENS_FILE;
  }
  const state = process.env.XDG_STATE_HOME || path.join(os.homedir(), ".local", "state");
  return path.join(state, "straightline", "tokens.json");
}

// Sends `authorization: Bearer <token>` with every call.
function bearer(token) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

function credentials(role) {
  const { STRAIGHTLINE_TLS_CERT: cert, STRAIGHTLINE_TLS_KEY: key } = process.env;
  const ca = process.env.STRAIGHTLINE_TLS_CLIENT_CA;
  if (cert && key && ca) {
    const read = (file) => fs.readFileSync(file);
    return { channel: grpc.credentials.createSsl(read(ca), read(key), read(cert)), options: {} };
  }
  const token = JSON.parse(fs.readFileSync(tokensFile(), "utf8"))[role];
  return {
    channel: grpc.credentials.createInsecure(),
    options: { interceptors: [bearer(token)] },
  };
}

// One placer, or several ("a:1,b:2", IP literals) that gRPC balances over itself.
function targetOf(address) {
  // Back within half a second of a placer's return (the default backoff grows to 2 min).
  const reconnect = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 500,
  };
  if (!address.includes(",")) {
    return [address, reconnect];
  }
  const serviceConfig = fs.readFileSync(SEVERAL_PLACERS, "utf8");
  return [`ipv4:${address}`, { ...reconnect, "grpc.service_config": serviceConfig }];
}

/** {target, credentials, options} for a client of `address` ("host:port" or several) as `role`. */
function channelTo(address, role) {
  const { channel, options } = credentials(role);
  const [target, channelOptions] = targetOf(address);
  return { target, credentials: channel, options: { ...options, ...channelOptions } };
}

module.exports = { channelTo };
