"""Generated protobuf messages and gRPC stubs of the `scriptgen.v1` API.

Everything else in this folder is produced by `make proto` from proto/ and
committed; do not edit it by hand.
"""
