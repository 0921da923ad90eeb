// Test-only preload for Azurite (node --require): shifts the server's clock by the number of milliseconds
// written in $AZURITE_CLOCK_FILE, so a test can back-date the Last-Modified Azurite records for an upload
// (what an Azure multipart upload that started earlier looks like). No file, or 0: the real clock.
"use strict";
const fs = require("fs");
const clockFile = process.env.AZURITE_CLOCK_FILE;
const RealDate = Date;

function offset() {
  if (!clockFile) return 0;
  try {
    return Number(fs.readFileSync(clockFile, "utf8")) || 0;
  } catch {
    return 0;
  }
}

class ShiftedDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(RealDate.now() + offset());
    else super(...args);
  }
  static now() {
    return RealDate.now() + offset();
  }
}

globalThis.Date = ShiftedDate;
