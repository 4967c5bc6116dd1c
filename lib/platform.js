'use strict';

/** This machine as napi names platforms (`aluvia.<platform>.node`, `@aluvia/sdk-<platform>`): linux-x64-gnu, darwin-arm64, … */
function platformName() {
  const { platform, arch } = process;
  if (platform !== 'linux') return `${platform}-${arch}`;
  let glibc = true;
  try {
    glibc = Boolean(process.report.getReport().header.glibcVersionRuntime);
  } catch {
    // Assume glibc.
  }
  return `${platform}-${arch}-${glibc ? 'gnu' : 'musl'}`;
}

module.exports = { platformName };
