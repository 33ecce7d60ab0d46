"""The test suite (a package, so that the benchmarks import its helpers as ``tests.helpers``)."""
