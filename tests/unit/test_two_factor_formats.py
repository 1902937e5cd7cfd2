"""Better Auth's two-factor formats: pure checks (round trips, tampering, RFC 6238 vectors, values better-auth
1.7.25 produced), then cross-checks that run better-auth's own code under node, from .tools/ as `make test`
installs it. A missing node or better-auth fails these tests; it never skips them."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from typing import Any

import pytest

from authsidecar.plugins.two_factor.formats import (
    SecretKeyring,
    consume_backup_code,
    decode_backup_codes,
    decrypt,
    encode_backup_codes,
    encrypt,
    new_backup_codes,
    new_totp_secret,
    otpauth_uri,
    totp_code,
    totp_key,
    verify_totp,
)
from tests.better_auth.harness import ROOT, TOOLS, installed

SECRET = "two-factor-test-secret-0123456789abcdef"
# Made by better-auth 1.7.25: symmetricEncrypt({key: KAT_SECRET, data: ...}).
KAT_SECRET = "better-auth-known-answer-secret"
KAT_TOTP_SECRET = (
    "ad4e307f9c2992358e30a377f9a1bbf9f291a17d045bb41f50aee6db5c15d068c9dc5cc33e9234e799a66e81367caf427d1a5fd627348c32"
    "aab6ba878ee94b95b00911227cca9ebc",
    "JBSWY3DPEHPK3PXP-known_answer_32",
)
KAT_BACKUP_CODES = (
    "200ae2f960cbd055487a2b39415536eaa53f68a915d5dac261d6acc17a3d87a1da9f4e41955cc57367e7b4767a5b0b83718a4e1a158b3e"
    "789cb56880efda2be74f02b60af2",
    ["abcde-12345", "ABCDE-67890"],
)
# RFC 6238 appendix B, SHA1: the key is the ASCII "12345678901234567890", which is how Better Auth keys a secret
# string (its UTF-8 bytes), so the RFC's secret works here as a stored secret as it is.
RFC_SECRET = "12345678901234567890"
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]
SECRET_SHAPE = re.compile(r"[a-zA-Z0-9_-]{32}")
CODE_SHAPE = re.compile(r"[a-zA-Z0-9]{5}-[a-zA-Z0-9]{5}")


# --- ciphertext ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plaintext", ["", "a", "JBSWY3DPEHPK3PXP-abc_def", '["abcde-12345"]', "zoë ✓ 𝄞", "x" * 5000])
def test_encrypt_round_trips_as_nonce_ciphertext_tag_hex(plaintext: str) -> None:
    stored = encrypt(SECRET, plaintext)
    assert re.fullmatch(r"[0-9a-f]+", stored)
    assert len(stored) == 2 * (24 + len(plaintext.encode()) + 16)
    assert decrypt(SECRET, stored) == plaintext
    assert decrypt(SECRET, stored.upper()) == plaintext  # Better Auth's hex reader takes either case
    assert encrypt(SECRET, plaintext) != stored  # a fresh nonce each time


def test_decrypts_values_better_auth_made() -> None:
    assert decrypt(KAT_SECRET, KAT_TOTP_SECRET[0]) == KAT_TOTP_SECRET[1]
    assert decode_backup_codes(KAT_SECRET, KAT_BACKUP_CODES[0]) == KAT_BACKUP_CODES[1]


def _flip(stored: str, index: int) -> str:
    return stored[:index] + ("0" if stored[index] != "0" else "1") + stored[index + 1 :]


@pytest.mark.parametrize(
    "stored",
    [
        _flip(KAT_TOTP_SECRET[0], 0),  # nonce
        _flip(KAT_TOTP_SECRET[0], 60),  # ciphertext
        _flip(KAT_TOTP_SECRET[0], len(KAT_TOTP_SECRET[0]) - 1),  # tag
        KAT_TOTP_SECRET[0][:-2],  # truncated
        KAT_TOTP_SECRET[0] + "00",  # extended
        KAT_TOTP_SECRET[0][:-1],  # odd length
        KAT_TOTP_SECRET[0][:78],  # shorter than nonce + tag
        "",
        "zz" + KAT_TOTP_SECRET[0][2:],  # not hex
        " " + KAT_TOTP_SECRET[0][1:],
        KAT_TOTP_SECRET[0][:40] + " " + KAT_TOTP_SECRET[0][41:],
        "$ba$1$" + KAT_TOTP_SECRET[0],  # an envelope needs a key set
    ],
)
def test_tampered_or_malformed_values_raise_value_error(stored: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the one error the module promises
        decrypt(KAT_SECRET, stored)


def test_another_secret_cannot_decrypt() -> None:
    with pytest.raises(ValueError, match="altered or was encrypted with another secret"):
        decrypt(KAT_SECRET + "x", KAT_TOTP_SECRET[0])


def test_key_set_writes_envelopes_and_reads_old_versions_and_legacy_hex() -> None:
    old = SecretKeyring({1: "old-secret-" + "a" * 32}, current_version=1)
    rotated = SecretKeyring({2: "new-secret-" + "b" * 32, 1: old.keys[1]}, current_version=2, legacy_secret=SECRET)
    written_before = encrypt(old, "hello")
    assert written_before.startswith("$ba$1$")
    assert decrypt(rotated, written_before) == "hello"
    written_now = encrypt(rotated, "world")
    assert re.fullmatch(r"\$ba\$2\$[0-9a-f]+", written_now)
    assert decrypt(rotated, written_now) == "world"
    assert decrypt(rotated, encrypt(SECRET, "legacy")) == "legacy"
    with pytest.raises(ValueError, match="version 2"):
        decrypt(old, written_now)
    with pytest.raises(ValueError, match="legacy secret"):
        decrypt(old, encrypt(SECRET, "legacy"))
    with pytest.raises(ValueError, match="not in the key set"):
        SecretKeyring({1: "x"}, current_version=2)


# --- TOTP ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("at", "code"), RFC_VECTORS)
def test_totp_matches_rfc_6238_sha1_vectors(at: int, code: str) -> None:
    assert totp_code(RFC_SECRET, at, digits=8) == code
    assert totp_code(RFC_SECRET, at) == code[-6:]
    assert verify_totp(RFC_SECRET, code, at, digits=8)


def test_verify_totp_accepts_one_step_either_side_by_default() -> None:
    now = 1_700_000_000.5
    for offset in (-30, 0, 30):
        assert verify_totp(RFC_SECRET, totp_code(RFC_SECRET, now + offset), now)
    for offset in (-60, 60, 90):
        assert not verify_totp(RFC_SECRET, totp_code(RFC_SECRET, now + offset), now)
    assert verify_totp(RFC_SECRET, totp_code(RFC_SECRET, now - 60), now, window=2)
    assert not verify_totp(RFC_SECRET, totp_code(RFC_SECRET, now - 30), now, window=0)


def test_verify_totp_takes_only_the_exact_code() -> None:
    now = 1_700_000_000.0
    code = totp_code(RFC_SECRET, now)
    for wrong in ("", code[:-1], f" {code}", f"{code} ", code + "0", "\uff11\uff12\uff13\uff14\uff15\uff16", "ü" * 6):
        assert not verify_totp(RFC_SECRET, wrong, now)


def test_new_totp_secret_is_32_url_safe_characters_keyed_as_utf8() -> None:
    made = {new_totp_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(SECRET_SHAPE.fullmatch(secret) for secret in made)
    secret = made.pop()
    assert totp_key(secret) == secret.encode()


def test_imported_base32_secret_is_keyed_by_its_decoded_bytes() -> None:
    encoded = base64.b32encode(RFC_SECRET.encode()).decode()
    for stored in (f"base32:{encoded}", f"base32:{encoded.lower()}", f"base32:{encoded.rstrip('=')}"):
        assert totp_key(stored) == RFC_SECRET.encode()
        assert totp_code(stored, 59, digits=8) == "94287082"
    with pytest.raises(ValueError, match="base32"):
        totp_key("base32:ABC1")


def test_otpauth_uri_is_better_auths() -> None:
    assert otpauth_uri(RFC_SECRET, "Acme Co", "a@b.co") == (
        "otpauth://totp/Acme%20Co:a%40b.co?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme+Co&digits=6&period=30"
    )


def test_totp_rejects_unsupported_digits_and_period() -> None:
    with pytest.raises(ValueError, match="digits"):
        totp_code(RFC_SECRET, 0, digits=9)
    with pytest.raises(ValueError, match="period"):
        totp_code(RFC_SECRET, 0, period=0)


# --- backup codes -------------------------------------------------------------------------------------------


def test_new_backup_codes_are_ten_xxxxx_dash_xxxxx() -> None:
    codes = new_backup_codes()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(CODE_SHAPE.fullmatch(code) for code in codes)
    assert all(re.fullmatch(r"[a-zA-Z0-9]{5}-[a-zA-Z0-9]{7}", code) for code in new_backup_codes(3, 12))
    assert all(re.fullmatch(r"[a-zA-Z0-9]{3}-", code) for code in new_backup_codes(2, 3))
    with pytest.raises(ValueError, match="length"):
        new_backup_codes(length=0)


def test_backup_codes_round_trip_encrypted_and_plain() -> None:
    codes = new_backup_codes()
    stored = encode_backup_codes(SECRET, codes)
    assert decode_backup_codes(SECRET, stored) == codes
    assert json.loads(decrypt(SECRET, stored)) == codes
    plain = encode_backup_codes(SECRET, ["abcde-12345", "fghij-67890"], "plain")
    assert plain == '["abcde-12345","fghij-67890"]'
    assert decode_backup_codes(SECRET, plain, "plain") == ["abcde-12345", "fghij-67890"]


@pytest.mark.parametrize("text", ["not json", '"abcde-12345"', '{"a": 1}', '["a", 1]', "null"])
def test_backup_codes_that_are_not_a_json_string_array_raise(text: str) -> None:
    with pytest.raises(ValueError, match="backup codes"):
        decode_backup_codes(SECRET, encrypt(SECRET, text))
    with pytest.raises(ValueError, match="backup codes"):
        decode_backup_codes(SECRET, text, "plain")


def test_consuming_a_backup_code_rewrites_the_rest() -> None:
    codes = ["aaaaa-11111", "bbbbb-22222", "ccccc-33333"]
    stored = encode_backup_codes(SECRET, codes)
    after = consume_backup_code(SECRET, stored, "bbbbb-22222")
    assert after is not None
    assert decode_backup_codes(SECRET, after) == ["aaaaa-11111", "ccccc-33333"]
    assert consume_backup_code(SECRET, after, "bbbbb-22222") is None
    assert consume_backup_code(SECRET, stored, "BBBBB-22222") is None
    assert consume_backup_code(SECRET, stored, "bbbbb22222") is None
    plain = encode_backup_codes(SECRET, codes, "plain")
    assert consume_backup_code(SECRET, plain, "aaaaa-11111", "plain") == '["bbbbb-22222","ccccc-33333"]'
    with pytest.raises(ValueError):  # noqa: PT011 - the one error the module promises
        consume_backup_code(SECRET, _flip(stored, 70), "aaaaa-11111")


# --- cross-checks with better-auth's own code under node ----------------------------------------------------

NODE_PRELUDE = """
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
const tools = process.env.BA_TOOLS;
const requireTools = createRequire(join(tools, "package.json"));
const load = (name) => import(pathToFileURL(requireTools.resolve(name)).href);
const loadDist = (path) => import(pathToFileURL(join(tools, "node_modules", "better-auth", "dist", path)).href);
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const keyring = (k) => typeof k === "string" ? k
  : { keys: new Map(k.keys), currentVersion: k.currentVersion, legacySecret: k.legacySecret };
const output = (value) => process.stdout.write(JSON.stringify(value));
"""


def _node(script: str, payload: object) -> Any:
    """Run an ES-module snippet with better-auth from .tools/, ``input`` bound to ``payload``; its JSON output."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js (>= 20), then run `make test`, which installs better-auth")
    if not installed():
        pytest.fail("better-auth is not installed in .tools/: run `make test`, which installs it (npm)")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(ROOT)), "BA_TOOLS": str(TOOLS)}
    env["NODE_ENV"] = "test"
    done = subprocess.run(
        [node, "--input-type=module", "-e", NODE_PRELUDE + script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=env,
        cwd=TOOLS,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"node failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout)


PLAINTEXTS = ["", "JBSWY3DPEHPK3PXP-abc_def_ghijklm", '["abcde-12345","fghij-67890"]', "zoë ✓ 𝄞 \u2028", "x" * 3000]
KEY_SET = SecretKeyring({3: "rotated-" + "c" * 32, 1: "first-" + "d" * 32}, current_version=3, legacy_secret=SECRET)
KEY_SET_JSON = {"keys": [[3, KEY_SET.keys[3]], [1, KEY_SET.keys[1]]], "currentVersion": 3, "legacySecret": SECRET}


@pytest.mark.interop
def test_node_encrypts_python_decrypts() -> None:
    made = _node(
        """
        const { symmetricEncrypt } = await load("better-auth/crypto");
        const out = [];
        for (const key of input.keys) for (const data of input.plaintexts)
          out.push(await symmetricEncrypt({ key: keyring(key), data }));
        output(out);
        """,
        {"keys": [SECRET, KEY_SET_JSON], "plaintexts": PLAINTEXTS},
    )
    assert [decrypt(SECRET, stored) for stored in made[: len(PLAINTEXTS)]] == PLAINTEXTS
    assert all(stored.startswith("$ba$3$") for stored in made[len(PLAINTEXTS) :])
    assert [decrypt(KEY_SET, stored) for stored in made[len(PLAINTEXTS) :]] == PLAINTEXTS


@pytest.mark.interop
def test_python_encrypts_node_decrypts() -> None:
    stored = [encrypt(SECRET, text) for text in PLAINTEXTS]
    stored += [encrypt(KEY_SET, text) for text in PLAINTEXTS]
    stored += [encrypt(SecretKeyring({1: KEY_SET.keys[1]}, current_version=1), text) for text in PLAINTEXTS]
    read = _node(
        """
        const { symmetricDecrypt } = await load("better-auth/crypto");
        const out = [];
        for (const [key, data] of input.items) out.push(await symmetricDecrypt({ key: keyring(key), data }));
        output(out);
        """,
        {
            "items": [[SECRET, s] for s in stored[: len(PLAINTEXTS)]]
            + [[KEY_SET_JSON, s] for s in stored[len(PLAINTEXTS) :]]
        },
    )
    assert read == PLAINTEXTS * 3


@pytest.mark.interop
def test_node_rejects_what_python_rejects() -> None:
    good = encrypt(SECRET, "secret")
    bad = [_flip(good, 0), _flip(good, 60), _flip(good, len(good) - 1), good[:-2], good + "00"]
    outcomes = _node(
        """
        const { symmetricDecrypt } = await load("better-auth/crypto");
        const out = [];
        for (const data of input.bad) {
          try { await symmetricDecrypt({ key: input.secret, data }); out.push("decrypted"); }
          catch { out.push("rejected"); }
        }
        output(out);
        """,
        {"secret": SECRET, "bad": bad},
    )
    assert outcomes == ["rejected"] * len(bad)
    for stored in bad:
        with pytest.raises(ValueError):  # noqa: PT011 - the one error the module promises
            decrypt(SECRET, stored)


@pytest.mark.interop
def test_totp_codes_and_uris_match_better_auths_otp_helper() -> None:
    secrets_ = [new_totp_secret() for _ in range(3)] + [RFC_SECRET, "base32:JBSWY3DPEHPK3PXP"]
    times = [59.0, 1_111_111_109.0, 1_700_000_029.999, 1_700_000_030.0, time.time()]
    names = [("Acme Co", "a@b.co"), ("Zoë's (test) ~*!", "x+y/z:w&q=1 ü@exämple.org")]
    node = _node(
        """
        const { createOTP } = await load("@better-auth/utils/otp");
        const { base32 } = await load("@better-auth/utils/base32");
        // The plugin's decryptTOTPSecret: an imported "base32:" secret is keyed by its decoded bytes.
        const keyOf = (s) => s.startsWith("base32:") ? base32.decode(s.slice(7).toUpperCase()) : s;
        const realNow = Date.now;
        const out = { codes: [], verified: [], uris: [] };
        for (const secret of input.secrets) {
          const otp = createOTP(keyOf(secret), { digits: 6, period: 30 });
          for (const [i, at] of input.times.entries()) {
            Date.now = () => Math.floor(at * 1000);
            out.codes.push(await otp.totp());
            out.verified.push(await otp.verify(input.pythonCodes[secret][i]));
          }
          Date.now = realNow;
          for (const [issuer, account] of input.names) out.uris.push(otp.url(issuer, account));
        }
        output(out);
        """,
        {
            "secrets": secrets_,
            "times": times,
            "names": names,
            "pythonCodes": {s: [totp_code(s, at - 30) for at in times] for s in secrets_},
        },
    )
    assert node["codes"] == [totp_code(s, at) for s in secrets_ for at in times]
    assert node["verified"] == [True] * len(secrets_) * len(times)  # Python's code one step back, within BA's window
    assert node["uris"] == [otpauth_uri(s, issuer, account) for s in secrets_ for issuer, account in names]
    pairs = [(s, at) for s in secrets_ for at in times]
    assert all(verify_totp(s, code, at + 30) for (s, at), code in zip(pairs, node["codes"], strict=True))


@pytest.mark.interop
def test_backup_codes_match_better_auths_plugin_code() -> None:
    python_codes = new_backup_codes()
    node = _node(
        """
        const bc = await loadDist("plugins/two-factor/backup-codes/index.mjs");
        const opts = { storeBackupCodes: "encrypted" };
        const made = await bc.generateBackupCodes(input.secret, opts);
        const fromPython = await bc.getBackupCodes(input.stored, input.secret, opts);
        const used = await bc.verifyBackupCode({ backupCodes: input.stored, code: input.codes[4] }, input.secret, opts);
        const wrong = await bc.verifyBackupCode({ backupCodes: input.stored, code: "nope" }, input.secret, opts);
        const plain = await bc.generateBackupCodes(input.secret, { storeBackupCodes: "plain" });
        output({ made, fromPython, used, wrong, plain });
        """,
        {"secret": SECRET, "stored": encode_backup_codes(SECRET, python_codes), "codes": python_codes},
    )
    made = node["made"]
    assert all(CODE_SHAPE.fullmatch(code) for code in made["backupCodes"])
    assert len(made["backupCodes"]) == 10
    assert decode_backup_codes(SECRET, made["encryptedBackupCodes"]) == made["backupCodes"]
    assert node["fromPython"] == python_codes
    assert node["used"] == {"status": True, "updated": python_codes[:4] + python_codes[5:]}
    assert node["wrong"]["status"] is False
    plain = node["plain"]
    assert plain["encryptedBackupCodes"] == encode_backup_codes(SECRET, plain["backupCodes"], "plain")
    assert decode_backup_codes(SECRET, plain["encryptedBackupCodes"], "plain") == plain["backupCodes"]


APP_PRELUDE = """
const { betterAuth } = await load("better-auth");
const { memoryAdapter } = await load("better-auth/adapters/memory");
const { twoFactor } = await load("better-auth/plugins/two-factor");
const db = { user: [], session: [], account: [], verification: [], twoFactor: [] };
const auth = betterAuth({
  secret: input.secret, baseURL: "http://localhost:3000", database: memoryAdapter(db),
  logger: { level: "error" }, telemetry: { enabled: false },
  emailAndPassword: { enabled: true }, plugins: [twoFactor({ issuer: "Acme Co" })],
});
const email = "two.factor@example.com";
const signUp = await auth.api.signUpEmail({ body: { email, password: "password123", name: "T" }, returnHeaders: true });
const sessionCookie = new Headers({ cookie: signUp.headers.getSetCookie()[0].split(";")[0] });
const failure = async (call) => { try { await call(); return null; } catch (e) { return { status: e.status, code: e.body?.code }; } };
"""


@pytest.mark.interop
def test_rows_better_auth_writes_on_enable_read_here() -> None:
    node = _node(
        APP_PRELUDE
        + """
        const enabled = await auth.api.enableTwoFactor({ body: { password: "password123" }, headers: sessionCookie });
        output({ enabled, row: db.twoFactor[0], user: db.user[0] });
        """,
        {"secret": SECRET},
    )
    row, user, enabled = node["row"], node["user"], node["enabled"]
    assert set(row) == {"id", "secret", "backupCodes", "userId", "verified", "failedVerificationCount"}
    assert (row["userId"], row["verified"], row["failedVerificationCount"]) == (user["id"], False, 0)
    assert user["twoFactorEnabled"] is False  # set only once verify-totp succeeds
    secret = decrypt(SECRET, row["secret"])
    assert SECRET_SHAPE.fullmatch(secret)
    assert enabled["totpURI"] == otpauth_uri(secret, "Acme Co", "two.factor@example.com")
    assert decode_backup_codes(SECRET, row["backupCodes"]) == enabled["backupCodes"]


@pytest.mark.interop
def test_rows_written_here_pass_better_auths_sign_in_challenge() -> None:
    secret = new_totp_secret()
    codes = new_backup_codes()
    node = _node(
        APP_PRELUDE
        + """
        Object.assign(db.user[0], { twoFactorEnabled: true });
        db.twoFactor.push({ id: "tf-1", userId: db.user[0].id, secret: input.stored, backupCodes: input.backupCodes,
          verified: true, failedVerificationCount: 0 });
        const signIn = async () => {
          const r = await auth.api.signInEmail({ body: { email, password: "password123" }, returnHeaders: true });
          const cookies = r.headers.getSetCookie().map((c) => c.split(";")[0]);
          const challenge = cookies.find((c) => c.startsWith("better-auth.two_factor="));
          return { body: r.response, challenge, rows: db.verification.map((v) => ({ ...v })),
                   maxAge: r.headers.getSetCookie().find((c) => c.startsWith("better-auth.two_factor=")) };
        };
        const first = await signIn();
        const headers = new Headers({ cookie: first.challenge });
        const wrongTotp = await failure(() => auth.api.verifyTOTP({ body: { code: "000000" === input.code ? "111111" : "000000" }, headers }));
        const countAfterWrong = db.twoFactor[0].failedVerificationCount;
        const totp = await auth.api.verifyTOTP({ body: { code: input.code }, headers });
        const second = await signIn();
        const backup = await auth.api.verifyBackupCode({ body: { code: input.backupCode }, headers: new Headers({ cookie: second.challenge }) });
        output({ first, wrongTotp, countAfterWrong, totp, backup, row: db.twoFactor[0], sessions: db.session.length });
        """,
        {
            "secret": SECRET,
            "stored": encrypt(SECRET, secret),
            "backupCodes": encode_backup_codes(SECRET, codes),
            "code": totp_code(secret, time.time()),
            "backupCode": codes[2],
        },
    )
    first = node["first"]
    assert first["body"] == {"twoFactorRedirect": True, "twoFactorMethods": ["totp"]}
    identifier = re.fullmatch(r"better-auth\.two_factor=(2fa-[a-zA-Z0-9_-]{20})\.[^;]+", first["challenge"])
    assert identifier is not None
    assert "Max-Age=600" in first["maxAge"]
    rows = {row["identifier"]: row["value"] for row in first["rows"]}
    assert rows == {identifier.group(1): node["row"]["userId"], f"2fa-attempts-{identifier.group(1)}": "0"}
    assert node["wrongTotp"] == {"status": "UNAUTHORIZED", "code": "INVALID_CODE"}
    assert node["countAfterWrong"] == 1
    assert node["totp"]["token"]
    assert node["backup"]["token"]
    assert node["row"]["failedVerificationCount"] == 0
    assert decode_backup_codes(SECRET, node["row"]["backupCodes"]) == codes[:2] + codes[3:]
