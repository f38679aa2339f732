"""What the benchmarks share: a scratch database with its catalog (`setup`), the processes they
start (`processes`), the load they drive (`load`) and how they report it (`report`)."""
