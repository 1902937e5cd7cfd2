import datetime

from authsidecar_client.v1 import resources_pb2 as _resources_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignUpRequest(_message.Message):
    __slots__ = ("email", "password", "name", "image", "client", "remember_me", "additional_fields")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    REMEMBER_ME_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_FIELDS_FIELD_NUMBER: _ClassVar[int]
    email: str
    password: str
    name: str
    image: str
    client: _resources_pb2.ClientContext
    remember_me: bool
    additional_fields: _struct_pb2.Struct
    def __init__(self, email: _Optional[str] = ..., password: _Optional[str] = ..., name: _Optional[str] = ..., image: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ..., remember_me: _Optional[bool] = ..., additional_fields: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SignUpResponse(_message.Message):
    __slots__ = ("user", "session", "token", "session_cookie", "dont_remember_cookie")
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_COOKIE_FIELD_NUMBER: _ClassVar[int]
    DONT_REMEMBER_COOKIE_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    session: _resources_pb2.Session
    token: str
    session_cookie: str
    dont_remember_cookie: str
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ..., session: _Optional[_Union[_resources_pb2.Session, _Mapping]] = ..., token: _Optional[str] = ..., session_cookie: _Optional[str] = ..., dont_remember_cookie: _Optional[str] = ...) -> None: ...

class SignInRequest(_message.Message):
    __slots__ = ("email", "password", "client", "remember_me")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    REMEMBER_ME_FIELD_NUMBER: _ClassVar[int]
    email: str
    password: str
    client: _resources_pb2.ClientContext
    remember_me: bool
    def __init__(self, email: _Optional[str] = ..., password: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ..., remember_me: _Optional[bool] = ...) -> None: ...

class SignInResponse(_message.Message):
    __slots__ = ("user", "session", "token", "session_cookie", "dont_remember_cookie", "challenge")
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_COOKIE_FIELD_NUMBER: _ClassVar[int]
    DONT_REMEMBER_COOKIE_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    session: _resources_pb2.Session
    token: str
    session_cookie: str
    dont_remember_cookie: str
    challenge: SignInChallenge
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ..., session: _Optional[_Union[_resources_pb2.Session, _Mapping]] = ..., token: _Optional[str] = ..., session_cookie: _Optional[str] = ..., dont_remember_cookie: _Optional[str] = ..., challenge: _Optional[_Union[SignInChallenge, _Mapping]] = ...) -> None: ...

class SignInChallenge(_message.Message):
    __slots__ = ("kind", "token", "methods", "expires_at")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    token: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[str] = ..., token: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SignOutRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class SignOutResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SendVerificationEmailRequest(_message.Message):
    __slots__ = ("email", "client")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    email: str
    client: _resources_pb2.ClientContext
    def __init__(self, email: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class SendVerificationEmailResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyEmailRequest(_message.Message):
    __slots__ = ("token", "client")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    token: str
    client: _resources_pb2.ClientContext
    def __init__(self, token: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class VerifyEmailResponse(_message.Message):
    __slots__ = ("user", "session", "token", "session_cookie")
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_COOKIE_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    session: _resources_pb2.Session
    token: str
    session_cookie: str
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ..., session: _Optional[_Union[_resources_pb2.Session, _Mapping]] = ..., token: _Optional[str] = ..., session_cookie: _Optional[str] = ...) -> None: ...

class RequestPasswordResetRequest(_message.Message):
    __slots__ = ("email", "client")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    email: str
    client: _resources_pb2.ClientContext
    def __init__(self, email: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class RequestPasswordResetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetPasswordRequest(_message.Message):
    __slots__ = ("token", "new_password", "client")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    token: str
    new_password: str
    client: _resources_pb2.ClientContext
    def __init__(self, token: _Optional[str] = ..., new_password: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class ResetPasswordResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChangePasswordRequest(_message.Message):
    __slots__ = ("token", "current_password", "new_password", "revoke_other_sessions", "client")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    REVOKE_OTHER_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    token: str
    current_password: str
    new_password: str
    revoke_other_sessions: bool
    client: _resources_pb2.ClientContext
    def __init__(self, token: _Optional[str] = ..., current_password: _Optional[str] = ..., new_password: _Optional[str] = ..., revoke_other_sessions: _Optional[bool] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class ChangePasswordResponse(_message.Message):
    __slots__ = ("session", "token", "session_cookie")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_COOKIE_FIELD_NUMBER: _ClassVar[int]
    session: _resources_pb2.Session
    token: str
    session_cookie: str
    def __init__(self, session: _Optional[_Union[_resources_pb2.Session, _Mapping]] = ..., token: _Optional[str] = ..., session_cookie: _Optional[str] = ...) -> None: ...

class ChangeEmailRequest(_message.Message):
    __slots__ = ("token", "new_email", "client", "current_password")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NEW_EMAIL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    token: str
    new_email: str
    client: _resources_pb2.ClientContext
    current_password: str
    def __init__(self, token: _Optional[str] = ..., new_email: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ..., current_password: _Optional[str] = ...) -> None: ...

class ChangeEmailResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("token", "name", "image", "additional_fields")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_FIELDS_FIELD_NUMBER: _ClassVar[int]
    token: str
    name: str
    image: str
    additional_fields: _struct_pb2.Struct
    def __init__(self, token: _Optional[str] = ..., name: _Optional[str] = ..., image: _Optional[str] = ..., additional_fields: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("token", "password", "client")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    token: str
    password: str
    client: _resources_pb2.ClientContext
    def __init__(self, token: _Optional[str] = ..., password: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
