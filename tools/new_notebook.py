"""Write a skeleton study notebook (title, parameters, imports, resolve, provenance).

Usage: python tools/new_notebook.py <study> "<title>" "<question>"
Study authors then add methods steps between "resolve" and "paper vs this run".
"""
import sys

import nbformat as nbf

COMMON = '''cohort_dir: str = ""  # cohort folder (cases.csv + rois.csv); empty means the built-in simulated cohort
synthetic_size: str = "smoke"  # built-in cohort size: smoke or paper
synthetic_signal: float = 1.0  # built-in cohort class-effect scale (0 means no effect: negative control)
seed: int = 0  # master random seed
out_dir: str = ""  # report folder; empty means reports/<study>/interactive
cache_dir: str = ""  # feature cache folder; empty means data/cache
n_jobs: int = 2  # worker processes for extraction and CV
n_permutations: int = 20  # label permutations of the whole pipeline'''


def main(study, title, question):
    nb = nbf.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "vcfnb", "display_name": "vcfnb (Python 3)",
                                  "language": "python"},
                   "language_info": {"name": "python"}}
    cells = [
        nbf.v4.new_markdown_cell(f"# {title}\n\n**Question.** {question}\n\n"
                                 "This notebook is an executable report: run it with papermill "
                                 "(`make reproduce`) or top to bottom in JupyterLab (`make lab`)."),
        nbf.v4.new_code_cell(COMMON, metadata={"tags": ["parameters"]}),
        nbf.v4.new_code_cell("import vcfnb as vc"),
        nbf.v4.new_markdown_cell("## Resolve the run\nValidate parameters, load (or generate) the "
                                 "cohort and create the report folder."),
        nbf.v4.new_code_cell(f'run = vc.report.start_run("{study}", globals())\n'
                             "run.cohort.summary()"),
        nbf.v4.new_markdown_cell("## Provenance\nVersions, parameter and cohort hashes, git commit."),
        nbf.v4.new_code_cell("run.provenance()"),
    ]
    nb.cells = cells
    nbf.write(nb, f"notebooks/{study}.ipynb")


if __name__ == "__main__":
    main(*sys.argv[1:4])
