"""The book's upper floor: shared presentation machinery (figures, exercises, rules, claims) and one room per chapter (chNN/)."""
