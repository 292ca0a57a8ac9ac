# Reference values for tests/test_harmonize.py (vcfnb.harmonize.ComBat against sva::ComBat).
# Run from this folder: python combat_input.py && Rscript combat.R
# Input: combat_input.csv (sample, batch, age, sex, f1..f8). Output: combat_reference.csv
# (case, sample, f1..f8 = the harmonised values, 17 significant digits).
# Debian bookworm r-bioc-sva (apt-get install r-base-core r-bioc-sva); versions are printed.
suppressPackageStartupMessages(library(sva))
cat("R", R.version$major, R.version$minor, "sva", as.character(packageVersion("sva")), "\n")
d <- read.csv("combat_input.csv", stringsAsFactors = FALSE)
feats <- paste0("f", 1:8)

run <- function(case, rows, mod_formula, par.prior, ref.batch = NULL, mean.only = FALSE) {
  s <- d[rows, ]
  dat <- t(as.matrix(s[, feats]))            # sva: features x samples
  colnames(dat) <- s$sample
  mod <- if (is.null(mod_formula)) NULL else model.matrix(mod_formula, data = s)
  out <- suppressMessages(ComBat(dat = dat, batch = s$batch, mod = mod, par.prior = par.prior,
                                 mean.only = mean.only, ref.batch = ref.batch))
  res <- data.frame(case = case, sample = s$sample, stringsAsFactors = FALSE)
  for (f in feats) res[[f]] <- sprintf("%.17g", out[f, ])
  res
}

train <- d$batch != "D"
all <- rep(TRUE, nrow(d))
cov <- ~ age + sex
res <- rbind(
  run("par_ref", train, cov, TRUE, "A"),
  run("nonpar_ref", train, cov, FALSE, "A"),
  run("par_noref", train, cov, TRUE),
  run("nonpar_noref", train, cov, FALSE),
  run("meanonly_ref", train, cov, TRUE, "A", mean.only = TRUE),
  run("par_ref_external", all, NULL, TRUE, "A"),
  run("nonpar_ref_external", all, NULL, FALSE, "A")
)
write.csv(res, "combat_reference.csv", row.names = FALSE, quote = FALSE)
