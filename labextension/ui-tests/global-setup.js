// Starts the demo consortium for tests/consortium.spec.ts (see consortium.js).
module.exports = require('./consortium').startConsortium;
