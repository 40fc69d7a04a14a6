# physfm: build the book, run the tests. Both targets set up everything on a fresh machine
# that has Python 3.11 and pip: a virtual environment in .venv with the pinned requirements.
#
#   make book    execute every chapter at the cpu profile, render HTML to _build/html
#   make test    ruff, unit tests, every chapter at the smoke profile under nbval, book build with -W,
#                every page of it loaded in headless Chromium (Debian's chromium package)
#   make student the student edition: HTML without solutions, nbgrader notebooks (_build/student)
#   make bench   speed/memory benchmarks against the reference libraries
#   make clean   remove builds (keeps .venv)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# pip may not take `-e .` from a constraints file: constraints are requirements.txt minus it.
CONSTRAINTS := $(VENV)/constraints.txt

export PYTHONUNBUFFERED := 1
# pyvista renders off-screen through EGL; no display needed
export VTK_DEFAULT_OPENGL_WINDOW := vtkEGLRenderWindow
# OpenMP threads sleep while they wait instead of spinning: on a small machine shared with other
# work, spinning threads steal the time slices of the threads they wait for and torch's small
# parallel regions (the generator's FFTs) run 20-60x slower (see benchmarks/bench_generator.py)
export OMP_WAIT_POLICY := PASSIVE
# a built page keeps what a run prints: one line per finished progress bar, not its redraws
# (physfm.runtime.progress_bar; in a terminal or a live Jupyter kernel the bars redraw)
export PHYSFM_PROGRESS := summary

.PHONY: book test lint unit notebooks book-check student bench env test-env student-env clean

env: $(VENV)/.book-installed
test-env: $(VENV)/.test-installed
student-env: $(VENV)/.student-installed

$(VENV)/.book-installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@grep -v '^-e' requirements.txt > $(CONSTRAINTS)
	@touch $@

$(VENV)/.student-installed: $(VENV)/.book-installed requirements-student.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-student.txt -c $(CONSTRAINTS)
	@touch $@

# the tests check the student notebooks with nbgrader itself, so they need the student edition's packages
$(VENV)/.test-installed: $(VENV)/.student-installed requirements-test.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt -c $(CONSTRAINTS)
	@touch $@

# Jupyter Book's execution cache is keyed by the notebooks' cells only: it is emptied whenever the
# library or the requirements changed since the last build, so a page never shows stale outputs
# PHYSFM_RUNS: every experiment saves each finished run there, so an interrupted build resumes
book: env
	$(BIN)/python -m physfm.book invalidate _build
	PHYSFM_RUNS=$(CURDIR)/_build/runs $(BIN)/jupyter-book build --all .
	$(BIN)/python tests/check_built_book.py --browser-if-found _build/html
	@echo
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

test: test-env lint unit notebooks book-check
	@echo "make test: all checks passed"

# ruff (configured in pyproject.toml): the library, tests, benchmarks and the chapters' code cells
lint: test-env
	$(BIN)/ruff check src tests benchmarks book
	$(BIN)/ruff format --check src tests benchmarks

# unit tests draw without a display; the notebooks must not (under MPLBACKEND=Agg a Jupyter
# kernel keeps no figures: plt.show() renders nothing into the page)
unit: test-env
	MPLBACKEND=Agg $(BIN)/python -m pytest tests

# every chapter at the smoke profile, executed by nbval (notebooks are stored without outputs)
notebooks: test-env
	PHYSFM_PROFILE=smoke $(BIN)/python -m pytest --nbval-lax -p no:cacheprovider book

# the whole book at the smoke profile, warnings as errors, in its own folder and execution
# cache so smoke outputs never mix with the cpu build of `make book`; then every page in
# headless Chromium: formulas typeset, no MathJax or console error, images load, captions
book-check: env
	$(BIN)/python -m physfm.book invalidate _build/smoke/_build
	PHYSFM_PROFILE=smoke $(BIN)/jupyter-book build --all -W -n --keep-going --path-output _build/smoke .
	$(BIN)/python tests/check_built_book.py _build/smoke/_build/html

# the student edition, for instructors: the HTML book without solutions (exercise cells as
# stubs), from the execution cache of `make book` (it runs what is not cached), and the chapters
# as an nbgrader course folder: source/ (solutions, cells marked for grading) and release/
# (what students get, made by nbgrader's generate_assignment)
student: student-env
	@mkdir -p _build/student
	$(BIN)/python -m physfm.student config _config.yml _build/student/_config.yml _build/.jupyter_cache
	$(BIN)/jupyter-book build --all --config _build/student/_config.yml --path-output _build/student .
	$(BIN)/python -m physfm.student notebooks _build/student/nbgrader book/*.ipynb
	@echo
	@echo "The student edition is at file://$(CURDIR)/_build/student/_build/html/index.html"
	@echo "nbgrader course folder: $(CURDIR)/_build/student/nbgrader (source/ for instructors, release/ for students)"

bench: test-env
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt -c $(CONSTRAINTS)
	@# every benchmark runs; a missed target (exit status 1) fails the target at the end
	@status=0; for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || status=1; done; exit $$status

clean:
	rm -rf _build
