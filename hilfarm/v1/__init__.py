"""Generated gRPC contract (protos/hilfarm/v1). Do not edit: run protos/generate.sh."""
