#!/usr/bin/env node
// Which pod answers a Node.js gRPC client's calls, for the lab's per-pod shares.
//
//   node shares.js --target TARGET --calls N --concurrency C
//                  [--deadline-ms MS] [--warmup-pods K] [--timeout-s S] [--no-service-config]
//
// The channel is the well-known "headless fix" snippet for grpc-js: the service config
// {"loadBalancingConfig": [{"round_robin": {}}]} passed as the grpc.service_config
// channel option, so a dns:/// target's pod IPs each get a subchannel instead of
// grpc-js's default pick_first pinning every call to one pod. --no-service-config
// leaves the option out (the control: pick_first). xds:/// targets register
// grpc-js-xds instead; their resolver supplies the service config from the control
// plane named in GRPC_XDS_BOOTSTRAP.
//
// Every call is the standard grpc.health.v1.Health/Check (no authentication, the
// request an empty message: zero bytes); every shop server answers it with a
// `shop-route` trailer starting `<service>/<pod>`, which names the pod that served it.
//
// Prints one JSON object on stdout; exit 0 once N calls have finished (whatever their
// status), 1 if the hard overall timeout stopped the run (the JSON of what finished is
// still printed), 2 for bad flags.
//
// A dns://HOST:PORT/ target's DNS server is honoured only with
// GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true in the environment (grpc-js's default
// resolver, the OS's getaddrinfo, has no way to ask a given server).
'use strict';

const USAGE =
  'usage: node shares.js --target TARGET --calls N --concurrency C ' +
  '[--deadline-ms MS] [--warmup-pods K] [--timeout-s S] [--no-service-config]';

const HEALTH_CHECK = '/grpc.health.v1.Health/Check';
const ROUTE_TRAILER = 'shop-route';
const HEADLESS_FIX = { loadBalancingConfig: [{ round_robin: {} }] };

// One line, naming the flag; the usage is in --help.
function fail(message) {
  process.stderr.write(`shares.js: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = {
    target: null,
    calls: null,
    concurrency: null,
    deadlineMs: 5000,
    timeoutS: 60,
    warmupPods: 0,
    serviceConfig: true,
  };
  const integer = (flag, raw, least) => {
    if (raw === undefined) fail(`${flag} needs a value`);
    if (!/^[0-9]+$/.test(raw) || Number(raw) < least || !Number.isSafeInteger(Number(raw))) {
      const what = least > 0 ? 'a positive integer' : 'an integer >= 0';
      fail(`${flag} must be ${what}, got ${JSON.stringify(raw)}`);
    }
    return Number(raw);
  };
  const positiveInt = (flag, raw) => integer(flag, raw, 1);
  const positiveNumber = (flag, raw) => {
    if (raw === undefined) fail(`${flag} needs a value`);
    const value = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(value) || value <= 0) {
      fail(`${flag} must be a positive number, got ${JSON.stringify(raw)}`);
    }
    return value;
  };
  for (let i = 0; i < argv.length; i++) {
    // --flag=value and --flag value both work.
    const [flag, inline] = argv[i].startsWith('--') && argv[i].includes('=')
      ? [argv[i].slice(0, argv[i].indexOf('=')), argv[i].slice(argv[i].indexOf('=') + 1)]
      : [argv[i], undefined];
    const value = () => (inline !== undefined ? inline : argv[++i]);
    switch (flag) {
      case '--target': {
        const target = value();
        if (target === undefined || target === '') fail('--target needs a value');
        args.target = target;
        break;
      }
      case '--calls':
        args.calls = positiveInt(flag, value());
        break;
      case '--concurrency':
        args.concurrency = positiveInt(flag, value());
        break;
      case '--deadline-ms':
        args.deadlineMs = positiveInt(flag, value());
        break;
      case '--warmup-pods':
        args.warmupPods = integer(flag, value(), 0);
        break;
      case '--timeout-s':
        args.timeoutS = positiveNumber(flag, value());
        break;
      case '--help':
        process.stdout.write(USAGE + '\n');
        process.exit(0);
        break;
      case '--no-service-config':
        if (inline !== undefined) fail('--no-service-config takes no value');
        args.serviceConfig = false;
        break;
      default:
        fail(`unknown flag ${JSON.stringify(argv[i])}`);
    }
  }
  for (const [flag, key] of [['--target', 'target'], ['--calls', 'calls'],
    ['--concurrency', 'concurrency']]) {
    if (args[key] === null) fail(`${flag} is required`);
  }
  return args;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  // Loaded after the flags are checked: a usage error needs no gRPC.
  const grpc = require('@grpc/grpc-js');
  const xds = /^xds:/i.test(args.target);
  const options = {};
  if (xds) {
    // Adds the xds resolver and the LB policies the control plane names.
    require('@grpc/grpc-js-xds').register();
  } else if (args.serviceConfig) {
    options['grpc.service_config'] = JSON.stringify(HEADLESS_FIX);
  }
  const identity = (buffer) => buffer; // no proto-loader: the bytes as they are
  const client = new grpc.Client(args.target, grpc.credentials.createInsecure(), options);

  const statusCounts = {};
  const perPod = {};
  const errors = {}; // "STATUS: details" of failed calls -> count
  let ok = 0;
  let unrouted = 0; // OK calls without a shop-route trailer (not a shop server)
  let started = 0;
  let finished = 0;
  let warmupCalls = 0;
  let timedOut = false;
  const inFlight = new Set();
  const begin = process.hrtime.bigint();
  let start = null; // of the measured calls, after any warm-up
  let done = false;
  const seconds = (since) => Number(process.hrtime.bigint() - since) / 1e9;

  const healthCheck = (onStatus) => {
    const call = client.makeUnaryRequest(
      HEALTH_CHECK,
      identity,
      identity,
      Buffer.alloc(0),
      new grpc.Metadata(),
      { deadline: Date.now() + args.deadlineMs },
      () => {} // the outcome is read from the status event, which also has the trailers
    );
    inFlight.add(call);
    call.on('status', (status) => {
      if (done) return; // cancelled by finish()
      inFlight.delete(call);
      onStatus(status);
    });
  };

  // "<service>/<pod> [next hops...]": the first hop is the server we called.
  const podOf = (status) => {
    const route = status.metadata.get(ROUTE_TRAILER)[0];
    return route === undefined ? '' : String(route).trim().split(/\s+/)[0].split('/')[1] || '';
  };

  const finish = () => {
    if (done) return;
    done = true;
    clearTimeout(hardStop);
    for (const call of inFlight) call.cancel();
    const summary = {
      target: args.target,
      calls: args.calls,
      ok,
      failures: finished - ok,
      status_counts: statusCounts,
      per_pod: perPod,
      elapsed_s: start === null ? 0 : seconds(start),
      service_config: !xds && args.serviceConfig ? HEADLESS_FIX : null,
      unrouted,
      finished,
      warmup_calls: warmupCalls,
      warmup_s: Number((start === null ? process.hrtime.bigint() : start) - begin) / 1e9,
      timed_out: timedOut,
      errors: Object.fromEntries(Object.entries(errors).slice(0, 5)),
    };
    if (timedOut) {
      process.stderr.write(
        `shares.js: stopped after ${args.timeoutS}s with ${finished} of ${args.calls} calls ` +
          `finished (${warmupCalls} warm-up calls)\n`
      );
    }
    // Exit from the write's callback: the xDS client's stream (and any reconnect
    // timers) would otherwise keep the process alive after the last call.
    process.stdout.write(JSON.stringify(summary) + '\n', () => {
      client.close();
      process.exit(timedOut ? 1 : 0);
    });
  };

  // The hard bound: however the calls fare (a resolver that never answers keeps them
  // queued until their deadlines, over and over), the run ends here.
  const hardStop = setTimeout(() => {
    timedOut = true;
    finish();
  }, args.timeoutS * 1000);

  const onMeasured = (status) => {
    finished += 1;
    const name = grpc.status[status.code] || String(status.code);
    statusCounts[name] = (statusCounts[name] || 0) + 1;
    if (status.code === grpc.status.OK) {
      ok += 1;
      const pod = podOf(status);
      if (pod) perPod[pod] = (perPod[pod] || 0) + 1;
      else unrouted += 1;
    } else {
      const key = `${name}: ${status.details}`;
      errors[key] = (errors[key] || 0) + 1;
    }
    if (finished === args.calls) finish();
    else next();
  };

  // A closed loop: each of the C workers starts its next call when one ends.
  const next = () => {
    if (done || started >= args.calls) return;
    started += 1;
    healthCheck(onMeasured);
  };
  const measure = () => {
    start = process.hrtime.bigint();
    for (let i = 0; i < Math.min(args.concurrency, args.calls); i++) next();
  };

  // --warmup-pods K: uncounted calls, one at a time, until K pods have answered. A
  // cold channel's first calls wait for its first READY subchannel and all go there
  // (round_robin picks among READY subchannels only); once K pods have answered, K
  // subchannels are READY and the measured calls see the steady rotation.
  const seen = new Set();
  const warmUp = () => {
    if (seen.size >= args.warmupPods) {
      measure();
      return;
    }
    warmupCalls += 1;
    healthCheck((status) => {
      if (status.code === grpc.status.OK && podOf(status)) seen.add(podOf(status));
      if (status.code === grpc.status.OK) warmUp();
      else setTimeout(warmUp, 50); // not resolved or connected yet: try again shortly
    });
  };
  warmUp();
}

main();
