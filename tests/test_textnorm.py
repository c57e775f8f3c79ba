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


# Each expected string is what a native reader says; the number words
# themselves are num2words' (for example Danish "nitten hundrede nioghalvfems").
@pytest.mark.parametrize(
    "text, language, expected",
    [
        # English
        ("On 2021-05-03 we met.", "en", "On May third, twenty twenty-one we met."),
        # en reads a numeric date month/day (US); en-GB day/month.
        ("Due 3/5/2021.", "en", "Due March fifth, twenty twenty-one."),
        ("Due 3/5/2021.", "en-GB", "Due the third of May twenty twenty-one."),
        ("Due 25/12/2021.", "en", "Due December twenty-fifth, twenty twenty-one."),
        ("It fell to $0.75, down 2.5%, at 10:00.", "en", "It fell to seventy-five cents, down two point five percent, at ten o'clock."),
        ("They raised $2.5 million on the 3rd of May.", "en", "They raised two point five million dollars on the third of May."),
        ("E.g. the 21st line, etc.", "en", "For example the twenty-first line, et cetera."),
        ("I said no.", "en", "I said no."),
        # Portuguese
        ("Em 1999 paguei R$ 12,50 pelo livro.", "pt", "Em mil novecentos e noventa e nove paguei doze reais e cinquenta centavos pelo livro."),
        ("A inflação foi de 3,5% em 2021.", "pt", "A inflação foi de três vírgula cinco por cento em dois mil e vinte e um."),
        ("A reunião é às 10h30 do dia 03/05/2021.", "pt", "A reunião é às dez horas e trinta do dia três de maio de dois mil e vinte e um."),
        ("O Sr. Silva ficou em 1º lugar e a Dra. Costa em 2º.", "pt", "O senhor Silva ficou em primeiro lugar e a doutora Costa em segundo."),
        ("É a 1ª vez que pago £2.", "pt", "É a primeira vez que pago duas libras."),
        ("O projeto custou R$ 2 milhões e R$ 1.500.", "pt", "O projeto custou dois milhões de reais e mil e quinhentos reais."),
        ("Sr. Costa chegou.", "pt", "Senhor Costa chegou."),
        # Danish
        ("I 1999 betalte vi 12,50 kr. for en kage.", "da", "I nitten hundrede nioghalvfems betalte vi tolv kroner og halvtreds øre for en kage."),
        ("Mødet er kl. 10.30 den 3. maj.", "da", "Mødet er klokken ti tredive den tredje maj."),
        ("Prisen steg f.eks. 2,5 % til 1 kr.", "da", "Prisen steg for eksempel to komma fem procent til en krone."),
        ("Det koster 12 kr. Det er billigt.", "da", "Det koster tolv kroner. Det er billigt."),
        ("Vi ses 30.5.2021 bl.a. i Aarhus kl. 9:05.", "da", "Vi ses tredivte maj totusinde og enogtyve blandt andet i Aarhus klokken ni nul fem."),
        # German
        ("Am 3. Mai 2021 zahlten wir 12,50 €.", "de", "Am dritten Mai zweitausendeinundzwanzig zahlten wir zwölf Euro und fünfzig Cent."),
        ("Die Quote lag bei 2,5 %.", "de", "Die Quote lag bei zwei Komma fünf Prozent."),
        ("Der Zug fährt um 10:45 Uhr.", "de", "Der Zug fährt um zehn Uhr fünfundvierzig."),
        ("Dr. Müller wohnt in Nr. 5, z.B. bis 1 Uhr.", "de", "Doktor Müller wohnt in Nummer fünf, zum Beispiel bis ein Uhr."),
        ("Das war am 03.05.2021, der 4. Mai war frei.", "de", "Das war am dritten Mai zweitausendeinundzwanzig, der vierte Mai war frei."),
        ("Es kostete 1.500 Euro, 1 % mehr.", "de", "Es kostete eintausendfünfhundert Euro, ein Prozent mehr."),
        ("Eintritt 12,50 Euro, Kaffee 1 Euro.", "de", "Eintritt zwölf Euro und fünfzig Cent, Kaffee ein Euro."),
        # Spanish
        ("En 1999 pagamos 12,50 €.", "es", "En mil novecientos noventa y nueve pagamos doce euros con cincuenta céntimos."),
        ("El paro bajó un 2,5 %.", "es", "El paro bajó un dos coma cinco por ciento."),
        ("La reunión es a las 10:45 del 3/5/2021.", "es", "La reunión es a las diez cuarenta y cinco del tres de mayo de dos mil veintiuno."),
        ("El Sr. García vive en el 1er piso y la Dra. López en el 3º.", "es", "El señor García vive en el primer piso y la doctora López en el tercero."),
        ("Ganó la 1ª carrera y 21.000 €.", "es", "Ganó la primera carrera y veintiún mil euros."),
        ("Pagó 21 euros y £1.", "es", "Pagó veintiún euros y una libra."),
        # French
        ("En 1999 nous avons payé 12,50 €.", "fr", "En mille neuf cent quatre-vingt-dix-neuf nous avons payé douze euros et cinquante centimes."),
        ("Le taux est de 3,5\u00a0%.", "fr", "Le taux est de trois virgule cinq pour cent."),
        ("Rendez-vous à 10h30 le 1er mai.", "fr", "Rendez-vous à dix heures trente le premier mai."),
        ("M. Dupont et Mme Martin arrivent le 03/05/2021.", "fr", "Monsieur Dupont et madame Martin arrivent le trois mai deux mille vingt et un."),
        ("C'est la 2e fois, la 1re était à 1h.", "fr", "C'est la deuxième fois, la première était à une heure."),
        ("Il gagne 1\u202f500 € par mois, le Dr Leroy 2 millions €.", "fr", "Il gagne mille cinq cents euros par mois, le docteur Leroy deux millions d'euros."),
        ("J'ai lu 1 livre pour 2,5 euros.", "fr", "J'ai lu un livre pour deux virgule cinq euros."),
    ],
)
def test_normalize_per_language(text, language, expected):
    assert normalize(text, language) == expected


def test_abbreviations_match_only_whole_words():
    assert normalize("Dracula et la lettre M.", "fr") == "Dracula et la lettre M."
    assert normalize("Afrika ca. 3", "de") == "Afrika circa drei"
    assert normalize("USA.Dr. X", "en") == "USA.Dr. X"


def test_lowercase():
    assert normalize("Dr. Chen paid $3 on 3rd Street.", "en", lowercase=True) == "doctor chen paid three dollars on third street."
    assert normalize("O Sr. Silva pagou R$ 5.", "pt", lowercase=True) == "o senhor silva pagou cinco reais."


def test_region_codes_use_the_base_language():
    assert normalize("Custou R$ 5", "pt-BR") == "Custou cinco reais"
    assert normalize("Es kostet 5 €", "de_AT") == "Es kostet fünf Euro"


@pytest.mark.parametrize("language", ["xx", "zz-ZZ", "", None, "ga"])
def test_unknown_language_keeps_digits_and_does_not_crash(language):
    text = "In 1999 we paid $12.50 at 10:45, “15%” – Dr. X"
    assert normalize(text, language) == 'In 1999 we paid $12.50 at 10:45, "15%" - Dr. X'
    assert for_scoring(text, language) == "in 1999 we paid 12 50 at 10 45 15 dr x"


def test_language_without_a_table_uses_num2words():
    assert normalize("Nel 1999 ho pagato 12 euro", "it") == "Nel millenovecentonovantanove ho pagato dodici euro"


@pytest.mark.parametrize(
    "written, spoken, language",
    [
        ("Paguei R$ 12,50 às 10h30!", "paguei doze reais e cinquenta centavos às dez horas e trinta", "pt"),
        ("Det koster 12,50 kr. (ca. 15 %)", "det koster tolv kroner og halvtreds øre cirka femten procent", "da"),
        ("Am 3. Mai: 2,5 % mehr.", "am dritten Mai zwei Komma fünf Prozent mehr", "de"),
        ("El 1er día pagó 21 €.", "el primer día pagó veintiún euros", "es"),
        ("Ça coûte 3,50 € à 10h.", "ça coûte trois euros et cinquante centimes à dix heures", "fr"),
    ],
)
def test_for_scoring_makes_spoken_equivalents_equal_per_language(written, spoken, language):
    assert for_scoring(written, language) == for_scoring(spoken, language)
    assert for_scoring(written, language) == spoken.lower()


def test_for_scoring_keeps_accents_and_splits_hyphens():
    assert for_scoring("Quatre-vingt-dix élèves, Straße!", "fr") == "quatre vingt dix élèves strasse"


def test_for_scoring_treats_spelling_variants_and_units_as_equal():
    assert for_scoring("They travelled 25 km to the centre.") == for_scoring(
        "They traveled twenty-five kilometers to the center.")
    assert for_scoring("neighbours", "en") != for_scoring("neighbours", "de")  # English only
