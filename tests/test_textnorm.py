import pytest

from voicemill.textnorm import for_scoring, normalize


@pytest.mark.parametrize(
    "text, language, expected",
    [
        ("In 1999 we paid $12.50", "en", "In nineteen ninety-nine we paid twelve dollars and fifty cents"),
        ("Sales grew by 15% last year.", "en", "Sales grew by fifteen percent last year."),
        ("It starts at 4:30 and ends at 6:05.", "en", "It starts at four thirty and ends at six oh five."),
        ("Dr. Chen met Mr. Patel on 3rd Street.", "en", "Doctor Chen met Mister Patel on third Street."),
        ("About 2,500 people paid $1,500.", "en", "About two thousand five hundred people paid one thousand five hundred dollars."),
        ("It costs $1 or 2.5 euros.", "en", "It costs one dollar or two point five euros."),
        ("Em 1999 pagamos 12 euros", "pt", "Em mil novecentos e noventa e nove pagamos doze euros"),
        ("Vi betalte 15% i 2020", "da", "Vi betalte femten procent i totusinde og tyve"),
        ("Wir zahlten 15%", "de", "Wir zahlten fünfzehn Prozent"),
        ("“Quoted”  text – with   dashes", "en", '"Quoted" text - with dashes'),
    ],
)
def test_normalize_table(text, language, expected):
    assert normalize(text, language) == expected


def test_for_scoring_makes_spoken_equivalents_equal():
    assert for_scoring("It costs $4.75!") == for_scoring("it costs four dollars and seventy-five cents")
    assert for_scoring("Hello, World.") == "hello world"
    assert for_scoring("Hello world") != for_scoring("Goodbye world")
