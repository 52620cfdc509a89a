"""Evaluation: metrics (scikit-learn based) on P(fake) scores, fake = positive class."""
