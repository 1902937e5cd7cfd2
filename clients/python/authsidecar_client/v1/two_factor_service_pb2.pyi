from authsidecar_client.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnableTwoFactorRequest(_message.Message):
    __slots__ = ("token", "password", "issuer", "client")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    token: str
    password: str
    issuer: str
    client: _resources_pb2.ClientContext
    def __init__(self, token: _Optional[str] = ..., password: _Optional[str] = ..., issuer: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class EnableTwoFactorResponse(_message.Message):
    __slots__ = ("totp_uri", "backup_codes")
    TOTP_URI_FIELD_NUMBER: _ClassVar[int]
    BACKUP_CODES_FIELD_NUMBER: _ClassVar[int]
    totp_uri: str
    backup_codes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, totp_uri: _Optional[str] = ..., backup_codes: _Optional[_Iterable[str]] = ...) -> None: ...

class ConfirmTwoFactorRequest(_message.Message):
    __slots__ = ("token", "code", "client")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    token: str
    code: str
    client: _resources_pb2.ClientContext
    def __init__(self, token: _Optional[str] = ..., code: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class ConfirmTwoFactorResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ...) -> None: ...

class VerifyTotpRequest(_message.Message):
    __slots__ = ("challenge", "code", "client")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    challenge: str
    code: str
    client: _resources_pb2.ClientContext
    def __init__(self, challenge: _Optional[str] = ..., code: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class VerifyBackupCodeRequest(_message.Message):
    __slots__ = ("challenge", "code", "client")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    challenge: str
    code: str
    client: _resources_pb2.ClientContext
    def __init__(self, challenge: _Optional[str] = ..., code: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class VerifyTotpResponse(_message.Message):
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

class VerifyBackupCodeResponse(_message.Message):
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

class DisableTwoFactorRequest(_message.Message):
    __slots__ = ("token", "password", "client")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    token: str
    password: str
    client: _resources_pb2.ClientContext
    def __init__(self, token: _Optional[str] = ..., password: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class DisableTwoFactorResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _resources_pb2.User
    def __init__(self, user: _Optional[_Union[_resources_pb2.User, _Mapping]] = ...) -> None: ...

class GenerateBackupCodesRequest(_message.Message):
    __slots__ = ("token", "password", "client")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    token: str
    password: str
    client: _resources_pb2.ClientContext
    def __init__(self, token: _Optional[str] = ..., password: _Optional[str] = ..., client: _Optional[_Union[_resources_pb2.ClientContext, _Mapping]] = ...) -> None: ...

class GenerateBackupCodesResponse(_message.Message):
    __slots__ = ("backup_codes",)
    BACKUP_CODES_FIELD_NUMBER: _ClassVar[int]
    backup_codes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, backup_codes: _Optional[_Iterable[str]] = ...) -> None: ...
