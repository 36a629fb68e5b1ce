// Stands in for a hosts entry in tests: node --require this file with
// SAFEDELETE_TEST_GATEWAY=IP:PORT, and TLS connections to
// server.smartlead.ai go to the gateway there instead (on a test port, not
// 443). The tool is unchanged: it still asks for server.smartlead.ai (SNI)
// and verifies the certificate against that name.
const tls = require("node:tls");
const [ip, port] = process.env.SAFEDELETE_TEST_GATEWAY.split(":");
const connect = tls.connect;
tls.connect = function (...args) {
  const options = args.find((a) => a && typeof a === "object");
  if (options && options.host === "server.smartlead.ai") {
    options.servername = options.servername || options.host;
    options.host = ip;
    options.port = Number(port);
  }
  return connect.apply(this, args);
};
