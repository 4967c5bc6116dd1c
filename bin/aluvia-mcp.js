#!/usr/bin/env node
'use strict';

require('../lib/mcp.js')
  .main()
  .catch((err) => {
    process.stderr.write(`aluvia-mcp: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  });
