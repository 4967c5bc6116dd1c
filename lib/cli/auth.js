'use strict';

// `aluvia auth`, `auth status`, `auth logout`. The login, the key check and
// the config file are the engine's (crates/core/src/auth.rs); here the URL
// and code go to stderr, so that stdout keeps its one JSON object.

const native = require('../native.js');
const { mapped } = require('../errors.js');
const { homeOf, failure } = require('./commands.js');

const writeStderr = (text) => process.stderr.write(text);

/**
 * `aluvia auth`: starts a device-code login, shows its URL and code through
 * `prompt` (default: stderr), waits for the approval, checks the key with
 * `GET /account` and saves it. Options: env, prompt.
 */
async function authLogin(o = {}) {
  const env = o.env ?? process.env;
  const home = homeOf(env);
  const prompt = o.prompt ?? writeStderr;
  try {
    const apiBaseUrl = mapped(() => native.apiBaseUrlFromEnv(env.ALUVIA_API_BASE_URL ?? null));
    // A config file that is not ours is refused before anything starts.
    mapped(() => native.authCheckConfig(home));
    const login = await mapped(() => native.authStart(apiBaseUrl));
    prompt(
      `To log in to Aluvia, open this URL in a browser:\n\n  ${login.verificationUriComplete}\n\n` +
        `and check that it shows this code: ${login.userCode}\n\nWaiting for approval…\n`,
    );
    return await mapped(() => native.authFinish(apiBaseUrl, login, home));
  } catch (err) {
    return failure(err);
  }
}

/** `aluvia auth status`: `{ authenticated, source, configFile }`, never the key. */
function authStatus(o = {}) {
  const env = o.env ?? process.env;
  try {
    return mapped(() => native.authStatus(env.ALUVIA_API_KEY ?? null, homeOf(env)));
  } catch (err) {
    return failure(err);
  }
}

/** `aluvia auth logout`: removes the saved key. */
function authLogout(o = {}) {
  const env = o.env ?? process.env;
  try {
    return mapped(() => native.authLogout(homeOf(env)));
  } catch (err) {
    return failure(err);
  }
}

module.exports = { authLogin, authStatus, authLogout };
