// Stops the demo consortium, also after failed tests (see consortium.js).
module.exports = require('./consortium').stopConsortium;
