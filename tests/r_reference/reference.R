# Reference values for tests/test_stats.py. Run from this folder: Rscript reference.R
# R 4.x with pROC 1.18.0, rms 6.5.0, MatchIt 4.5.1. Output: reference_output.txt (copied into the tests).
suppressPackageStartupMessages({library(pROC); library(rms); library(MatchIt)})
options(digits = 15)
p <- function(name, x) cat(name, "=", paste(format(x, digits = 15), collapse = ", "), "\n")

# ---- ROC / DeLong -------------------------------------------------------------------------
d <- read.csv("roc.csv")
r1 <- roc(d$y, d$s1, direction = "<", levels = c(0, 1), quiet = TRUE)
r2 <- roc(d$y, d$s2, direction = "<", levels = c(0, 1), quiet = TRUE)
r3 <- roc(d$y, d$s3, direction = "<", levels = c(0, 1), quiet = TRUE)
for (nm in c("r1", "r2", "r3")) {
  r <- get(nm)
  p(paste0(nm, " auc, ci_low, ci_high"), c(auc(r), ci.auc(r, method = "delong")[c(1, 3)]))
  p(paste0(nm, " var delong"), var(r, method = "delong"))
}
p("r1 ci.auc conf.level=0.9", ci.auc(r1, method = "delong", conf.level = 0.9)[c(1, 3)])
t12 <- roc.test(r1, r2, method = "delong", paired = TRUE)
p("roc.test r1 r2 paired z, p", c(t12$statistic, t12$p.value))
t13 <- roc.test(r1, r3, method = "delong", paired = TRUE)
p("roc.test r1 r3 paired z, p", c(t13$statistic, t13$p.value))
t23 <- roc.test(r2, r3, method = "delong", paired = TRUE)
p("roc.test r2 r3 paired z, p", c(t23$statistic, t23$p.value))
d2 <- read.csv("roc2.csv")
rb <- roc(d2$y, d2$s, direction = "<", levels = c(0, 1), quiet = TRUE)
tu <- roc.test(r1, rb, method = "delong", paired = FALSE)
p("roc.test r1 rb unpaired auc_b, D, df, p", c(auc(rb), tu$statistic, tu$parameter, tu$p.value))
b <- coords(r1, "best", best.method = "youden", transpose = FALSE)
p("youden r1 threshold, spec, sens", unlist(b[1, ]))

# ---- binary metrics CIs -------------------------------------------------------------------
p("wilson 19/26", prop.test(19, 26, correct = FALSE)$conf.int)
p("exact 19/26", binom.test(19, 26)$conf.int)

# ---- calibration --------------------------------------------------------------------------
cd <- read.csv("calib.csv")
lp <- qlogis(cd$p)
f_slope <- glm(y ~ lp, family = binomial, data = cd, control = glm.control(epsilon = 1e-14, maxit = 100))
f_int <- glm(y ~ offset(lp), family = binomial, data = cd, control = glm.control(epsilon = 1e-14, maxit = 100))
p("calib slope model (intercept, slope)", coef(f_slope))
p("calib offset intercept", coef(f_int))
p("calib slope confint.default", confint.default(f_slope)[2, ])
vp <- val.prob(cd$p, cd$y, pl = FALSE)
p("val.prob Intercept, Slope", vp[c("Intercept", "Slope")])

# Hosmer-Lemeshow, explicit (ResourceSelection::hoslem.test grouping)
hl <- function(y, yhat, g = 10) {
  qq <- unique(quantile(yhat, probs = seq(0, 1, 1 / g)))
  cutyhat <- cut(yhat, breaks = qq, include.lowest = TRUE)
  obs <- xtabs(cbind(1 - y, y) ~ cutyhat)
  expect <- xtabs(cbind(1 - yhat, yhat) ~ cutyhat)
  chisq <- sum((obs - expect)^2 / expect)
  df <- nlevels(cutyhat) - 2
  c(chisq, df, pchisq(chisq, df, lower.tail = FALSE))
}
p("HL g=10 stat, df, p", hl(cd$y, cd$p, 10))
p("HL g=8 stat, df, p", hl(cd$y, cd$p, 8))
cdr <- cd; cdr$p <- round(cdr$p, 1)  # ties merge groups
p("HL rounded g=10 stat, df, p", hl(cdr$y, cdr$p, 10))

# Net benefit, Vickers & Elkin formula
nb <- function(y, pr, t) sapply(t, function(tt) {
  tp <- sum(pr >= tt & y == 1); fp <- sum(pr >= tt & y == 0); n <- length(y)
  tp / n - fp / n * tt / (1 - tt)
})
p("net benefit t=0.1,0.2,0.4,0.6", nb(cd$y, cd$p, c(0.1, 0.2, 0.4, 0.6)))

# ---- baseline table -----------------------------------------------------------------------
bd <- read.csv("baseline.csv")
for (v in c("age", "bmi", "vbmd")) {
  sw <- tapply(bd[[v]], bd$group, function(x) shapiro.test(x)$p.value)
  p(paste("shapiro", v), sw)
  p(paste("t.test var.equal", v), c(t.test(bd[[v]] ~ bd$group, var.equal = TRUE)$statistic,
                                      t.test(bd[[v]] ~ bd$group, var.equal = TRUE)$p.value))
  w <- wilcox.test(bd[[v]] ~ bd$group, exact = FALSE, correct = TRUE)
  p(paste("wilcox", v), c(w$statistic, w$p.value))
  p(paste("quantile g0", v), quantile(bd[[v]][bd$group == 0], c(.25, .5, .75)))
}
tb <- table(bd$sex, bd$group)
p("chisq sex", c(chisq.test(tb)$statistic, chisq.test(tb)$p.value))
ts <- table(bd$site, bd$group)
p("site expected min", min(suppressWarnings(chisq.test(ts))$expected))
p("fisher site", fisher.test(ts)$p.value)

# ---- logistic tables ----------------------------------------------------------------------
bd$sex <- factor(bd$sex, levels = c("F", "M"))
fm <- glm(group ~ age + bmi + sex, family = binomial, data = bd, control = glm.control(epsilon = 1e-14, maxit = 100))
p("multi coef", coef(fm)[-1])
p("multi OR", exp(coef(fm))[-1])
p("multi CI low", exp(confint.default(fm))[-1, 1])
p("multi CI high", exp(confint.default(fm))[-1, 2])
p("multi p", summary(fm)$coefficients[-1, 4])
fu <- glm(group ~ age, family = binomial, data = bd, control = glm.control(epsilon = 1e-14, maxit = 100))
p("uni age OR, low, high, p", c(exp(coef(fu))[2], exp(confint.default(fu))[2, ], summary(fu)$coefficients[2, 4]))

# ---- nomogram (rms) -----------------------------------------------------------------------
dd <- datadist(bd); options(datadist = "dd")
bd$male <- as.integer(bd$sex == "M")
dd <- datadist(bd); options(datadist = "dd")
fl <- lrm(group ~ age + bmi + male, data = bd)
p("lrm coef", coef(fl))
nom <- nomogram(fl, age = c(40, 50, 60, 70, 80, 90), bmi = c(15, 20, 25, 30, 35, 40), male = c(0, 1),
                fun = plogis, fun.at = c(0.1, 0.3, 0.5, 0.7, 0.9), lp = TRUE)
p("nomo age points", nom$age$points)
p("nomo bmi points", nom$bmi$points)
p("nomo male points", nom$male$points)
p("nomo fun.at total points", nom[[length(nom)]]$x)
print(names(nom))

# ---- propensity matching (MatchIt) --------------------------------------------------------
# NOTE: the installed MatchIt 4.5.1 fast vector matcher (nn_matchC_vec.cpp) compares
# |distance differences| with C++ abs() that truncates to an integer, so on a logit or PS scale
# (differences < 1) it always takes the left (lower-score) neighbour instead of the nearest.
# Multiplying the linear-logit distance by 1e6 (an order-preserving rescaling; a standardised
# caliper is scale-free) gives MatchIt's intended greedy nearest-neighbour result.
pd_ <- read.csv("psm.csv")
m0 <- matchit(treat ~ age + sex, data = pd_, method = "nearest", distance = "glm", link = "linear.logit",
              ratio = 2)
lp <- m0$distance
p("psm lp (first 5)", lp[1:5])
m <- matchit(treat ~ age + sex, data = pd_, method = "nearest", distance = lp * 1e6, ratio = 2)
mm <- m$match.matrix
p("psm treated ids", pd_$id[as.integer(rownames(mm))])
p("psm match col1", pd_$id[as.integer(mm[, 1])])
p("psm match col2", pd_$id[as.integer(mm[, 2])])
s <- summary(m)
p("psm smd all (age, sex)", s$sum.all[c("age", "sex"), "Std. Mean Diff."])
p("psm smd matched (age, sex)", s$sum.matched[c("age", "sex"), "Std. Mean Diff."])
p("psm means matched control (age, sex)", s$sum.matched[c("age", "sex"), "Means Control"])
for (cal in c(0.02, 0.005)) {
  mc <- matchit(treat ~ age + sex, data = pd_, method = "nearest", distance = lp * 1e6, ratio = 2,
                caliper = cal)
  p(paste0("psm caliper=", cal, " col1"), pd_$id[as.integer(mc$match.matrix[, 1])])
  p(paste0("psm caliper=", cal, " col2"), pd_$id[as.integer(mc$match.matrix[, 2])])
  p(paste0("psm caliper=", cal, " smd matched"), summary(mc)$sum.matched[c("age", "sex"), "Std. Mean Diff."])
}
m3 <- matchit(treat ~ age + sex, data = pd_, method = "nearest", distance = m0$model$fitted.values * 1e6,
              ratio = 2)
p("psm ps-distance col1", pd_$id[as.integer(m3$match.matrix[, 1])])
p("psm ps-distance col2", pd_$id[as.integer(m3$match.matrix[, 2])])
