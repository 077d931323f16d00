# Two commands from a fresh clone (README, "Try it"); each sets up what it needs once and reuses it after.
.PHONY: demo test

demo:  ## lyra-train on the built-in synthetic fitness landscape, ending with its test Spearman
	@bash scripts/dev.sh demo

test:  ## the test extra, then the test suite (what CI runs)
	@bash scripts/dev.sh test
