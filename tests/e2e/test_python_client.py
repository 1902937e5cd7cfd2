"""The README's Python example, through the AuthClient wrapper."""

from __future__ import annotations

import secrets

import pytest

from authsidecar_client import AuthClient, AuthSidecarError
from tests.e2e.conftest import Server


@pytest.mark.parametrize("server", ["sqlite+memory"], indirect=True)
async def test_python_client_walkthrough(server: Server) -> None:
    email = f"client-{secrets.token_hex(4)}@example.com"
    async with AuthClient(server.address) as auth:
        signed_up = await auth.sign_up(email, "correct horse", name="Ada")
        current = await auth.validate_session(signed_up.token)
        assert current.user.email == email
        signed_in = await auth.sign_in(email, "correct horse", remember_me=False, user_agent="py")
        assert len(await auth.list_sessions(signed_in.token)) == 2
        current, _ = await auth.current_session(signed_in.token)
        assert current == signed_in.session.id
        assert await auth.revoke_other_sessions(signed_in.token) == 1
        await auth.sign_out(signed_in.token)
        with pytest.raises(AuthSidecarError) as info:
            await auth.validate_session(signed_in.token)
        assert info.value.reason == "INVALID_TOKEN"
        with pytest.raises(AuthSidecarError) as info:
            await auth.sign_up("nope", "short", name="")
        assert info.value.code.name == "INVALID_ARGUMENT"
        assert info.value.field_violations == [("name", "is required")]

        again = await auth.sign_in(email, "correct horse")
        assert (await auth.update_user(again.token, name="Ada L.")).user.name == "Ada L."
        changed = await auth.change_password(again.token, "correct horse", "battery staple", revoke_other_sessions=True)
        await auth.send_verification_email(email)
        await auth.request_password_reset(email)
        with pytest.raises(AuthSidecarError) as info:
            await auth.verify_email("not-a-token")
        assert info.value.reason == "INVALID_TOKEN"
        with pytest.raises(AuthSidecarError) as info:
            await auth.reset_password("not-a-token", "battery staple 2")
        assert info.value.reason == "INVALID_TOKEN"
        await auth.change_email(changed.token, f"new-{email}")
        await auth.delete_user(changed.token, "battery staple")
        with pytest.raises(AuthSidecarError) as info:
            await auth.validate_session(changed.token)
        assert info.value.reason == "INVALID_TOKEN"
