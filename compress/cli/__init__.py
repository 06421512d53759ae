"""The `compress` command line: `main` (run, recipes, the group), `bench` (bench and check, torch-free), `inputs`
(what --model / --data mean as recipe settings) and `options` (one-line errors, the --on device options)."""
