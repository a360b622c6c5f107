"""Proto3 schemas compiled by protoc (grpcio-tools' ``grpc_tools.protoc``), never parsed by hand.

A schema is written to a folder of its own and compiled in a protoc process into a descriptor set
(with source positions); the set is checked against ThingsBoard's rules (proto3; no imports,
options, extensions, ``required``, default values or reserved names; at least one message) and
loaded into a descriptor pool of its own, so two schemas may use the same names. The last
top-level message is the root. A schema protoc refuses, or one that breaks a rule, is
``SchemaError`` with the message and its line and column.

``compile_schema`` runs protoc without blocking the reactor; ``compile_file`` blocks (for this
package's own ``transport.proto``, once per process at start).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from twisted.internet import defer, utils

from tbcoap.errors import BadRequest

PROTOC = (sys.executable, "-m", "grpc_tools.protoc")
PROTOC_TIMEOUT = 30  # seconds: a blocking protoc run that takes longer fails

# field numbers in descriptor.proto, for the source positions of SourceCodeInfo
_FILE_DEPENDENCY, _FILE_MESSAGE, _FILE_ENUM, _FILE_EXTENSION, _FILE_OPTIONS = 3, 4, 5, 7, 8
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM, _MSG_EXT_RANGE, _MSG_EXTENSION, _MSG_OPTIONS = 2, 3, 4, 5, 6, 7
_MSG_ONEOF, _MSG_RESERVED, _MSG_RESERVED_NAME = 8, 9, 10
_FIELD_OPTIONS, _ENUM_VALUE, _ENUM_OPTIONS, _VALUE_OPTIONS, _ONEOF_OPTIONS = 8, 2, 3, 3, 2
_LABEL_REQUIRED = descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED
_POSITIONED = re.compile(r"\.proto:(\d+):(\d+): (.*)")


class SchemaError(BadRequest):
    """A schema protoc refused, or one against ThingsBoard's rules (the message says where)."""


class Compiled:
    """A compiled schema: its ``root`` message descriptor and ``message`` class, and ``file``
    (the FileDescriptor) for the other types it declares."""

    __slots__ = ("file", "root", "message")

    def __init__(self, file, root):
        self.file, self.root = file, root
        self.message = message_factory.GetMessageClass(root)


def compile_schema(text: str, name: str):
    """Deferred ``Compiled`` of a proto3 schema; SchemaError naming ``name`` (what the schema is,
    ``deviceTelemetryProtoSchema`` say) with protoc's message and position."""
    folder = tempfile.mkdtemp(prefix="tbcoap-schema-")
    try:
        args = _prepare(folder, "schema.proto", text)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    d = utils.getProcessOutputAndValue(PROTOC[0], args[1:], env=_environment(), path=folder)
    d.addCallback(lambda result: _loaded(folder, name, result[1], result[2], rules=True))
    d.addBoth(_removed, folder)
    return d


def compile_file(path: str) -> Compiled:
    """``Compiled`` of a .proto file of this package (blocking; no rules, its imports are none)."""
    folder = tempfile.mkdtemp(prefix="tbcoap-proto-")
    try:
        with open(path, encoding="utf-8") as f:
            args = _prepare(folder, os.path.basename(path), f.read())
        done = subprocess.run(args, cwd=folder, capture_output=True, env=_environment(), timeout=PROTOC_TIMEOUT)
        return _loaded(folder, os.path.basename(path), done.stderr, done.returncode, rules=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _prepare(folder, filename, text):
    with open(os.path.join(folder, filename), "w", encoding="utf-8") as f:
        f.write(text)
    return [*PROTOC, f"--proto_path={folder}", f"--descriptor_set_out={os.path.join(folder, 'out.pb')}",
            "--include_source_info", filename]


def _environment():
    return {key: value for key, value in os.environ.items() if key in ("PATH", "PYTHONPATH", "LANG", "HOME")}


def _removed(result, folder):
    shutil.rmtree(folder, ignore_errors=True)
    return result


def _loaded(folder, name, stderr, code, rules):
    """The Compiled of protoc's descriptor set in ``folder``, or SchemaError with protoc's message."""
    if code != 0:
        raise SchemaError(f"{name}: {_protoc_message(stderr)}")
    with open(os.path.join(folder, "out.pb"), "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
    (proto,) = files  # no imports: the schema's own file only
    if rules:
        _check_rules(proto, name)
    if not proto.message_type:
        raise SchemaError(f"{name}: at least one message must be defined")
    proto.ClearField("source_code_info")
    pool = descriptor_pool.DescriptorPool()
    file = pool.AddSerializedFile(proto.SerializeToString())
    root = proto.message_type[-1].name
    return Compiled(file, pool.FindMessageTypeByName(f"{proto.package}.{root}" if proto.package else root))


def _protoc_message(stderr: bytes) -> str:
    """protoc's first error with a position in the schema (``5:3: Expected ";".``), else its first
    line; an import it cannot find is named as an import."""
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines()
             if line.strip() and not line.startswith("warning")]
    for line in lines:
        found = _POSITIONED.search(line)
        if found:
            message = f"{found.group(1)}:{found.group(2)}: {found.group(3)}"
            if "Import " in message and "was not found" in message:
                message = f"{found.group(1)}:{found.group(2)}: imports are not supported"
            return message
    return lines[0] if lines else "protoc failed"


def _check_rules(proto, name):
    """ThingsBoard's rules for device schemas: SchemaError at the first thing they refuse."""
    spans = {tuple(location.path): location.span for location in proto.source_code_info.location}

    def refuse(path, what):
        span = spans.get(tuple(path))
        where = f"{span[0] + 1}:{span[1] + 1}: " if span else ""
        raise SchemaError(f"{name}: {where}{what} not supported")

    if proto.syntax != "proto3":
        raise SchemaError(f'{name}: the schema must start with syntax = "proto3";')
    if proto.dependency:
        refuse([_FILE_DEPENDENCY, 0], "imports are")
    if proto.HasField("options"):
        refuse([_FILE_OPTIONS], "options are")
    if proto.extension:
        refuse([_FILE_EXTENSION], "extensions are")
    for i, enum in enumerate(proto.enum_type):
        _check_enum(enum, [_FILE_ENUM, i], refuse)
    for i, message in enumerate(proto.message_type):
        _check_message(message, [_FILE_MESSAGE, i], refuse)


def _check_message(message, path, refuse):
    if message.HasField("options"):
        refuse([*path, _MSG_OPTIONS], "message options are")
    if message.extension or message.extension_range:
        refuse([*path, _MSG_EXTENSION if message.extension else _MSG_EXT_RANGE], "extensions are")
    if message.reserved_range or message.reserved_name:
        refuse([*path, _MSG_RESERVED if message.reserved_range else _MSG_RESERVED_NAME], "reserved fields are")
    for i, field in enumerate(message.field):
        if field.label == _LABEL_REQUIRED:
            refuse([*path, _MSG_FIELD, i], "required fields are")
        if field.HasField("default_value"):
            refuse([*path, _MSG_FIELD, i], "default values are")
        if field.HasField("options"):
            refuse([*path, _MSG_FIELD, i, _FIELD_OPTIONS], "field options are")
    for i, oneof in enumerate(message.oneof_decl):
        if oneof.HasField("options"):
            refuse([*path, _MSG_ONEOF, i, _ONEOF_OPTIONS], "oneof options are")
    for i, enum in enumerate(message.enum_type):
        _check_enum(enum, [*path, _MSG_ENUM, i], refuse)
    for i, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:  # a map<K, V> field's own entry type
            _check_message(nested, [*path, _MSG_NESTED, i], refuse)


def _check_enum(enum, path, refuse):
    if enum.HasField("options"):
        refuse([*path, _ENUM_OPTIONS], "enum options are")
    for i, value in enumerate(enum.value):
        if value.HasField("options"):
            refuse([*path, _ENUM_VALUE, i, _VALUE_OPTIONS], "enum value options are")
