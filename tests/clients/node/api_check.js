// berthd's gRPC API from Node's @grpc/grpc-js, as a programmatic client
// uses it: Version, then Namespaces create/list/delete over the given
// target (unix:///path/to/berth.sock). Prints one JSON object; a failed
// call exits non-zero with the gRPC status on stderr.
//
//     node api_check.js unix:///run/berth/berth.sock

'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.join(__dirname, '..', '..', '..', 'proto');

function load(file) {
  const definition = protoLoader.loadSync(file, {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition);
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 10000 }, (error, reply) => {
      if (error) reject(error);
      else resolve(reply);
    });
  });
}

async function main() {
  const target = process.argv[2];
  if (!target) throw new Error('usage: api_check.js TARGET');
  const credentials = grpc.credentials.createInsecure();
  const version = load('containerd/services/version/v1/version.proto').containerd.services.version.v1;
  const namespaces = load('containerd/services/namespaces/v1/namespace.proto').containerd.services.namespaces.v1;
  const versionClient = new version.Version(target, credentials);
  const namespacesClient = new namespaces.Namespaces(target, credentials);

  const report = {};
  const reply = await call(versionClient, 'Version', {});
  report.version = { version: reply.version, revision: reply.revision };

  const name = `node-${process.pid}`;
  await call(namespacesClient, 'Create', { namespace: { name, labels: { from: 'node' } } });
  const listed = (await call(namespacesClient, 'List', {})).namespaces.map((n) => n.name);
  await call(namespacesClient, 'Delete', { name });
  const after = (await call(namespacesClient, 'List', {})).namespaces.map((n) => n.name);
  report.namespaces = { created: name, listed, after_delete: after };

  versionClient.close();
  namespacesClient.close();
  console.log(JSON.stringify(report));
}

main().catch((error) => {
  console.error(`${error.code}: ${error.details || error.message}`);
  process.exit(1);
});
