module portcullis.example/team-and-registry

go 1.27

toolchain go1.27.3
