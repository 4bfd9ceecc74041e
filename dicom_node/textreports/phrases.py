"""What generated reports are made of: findings ("concepts") with the labels they carry, the words for
them, and the sentences a report is built from. Data only; `generator.py` composes it.

Each concept has affirmed sentences (`present`, with slots such as {side} and {lobe}), short forms for an
impression (`short`), and the noun phrases used to negate, hedge, ask about or compare it (`nouns`).
A concept with no labels is an abnormality outside the sixteen (`any_abnormality` only) when `other`, or
a normal variant (no label) when not.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Concept:
    key: str
    labels: tuple[str, ...]
    modality: str  # "CT", "MR" or "any"
    acute: bool
    present: tuple[str, ...]
    short: tuple[str, ...]
    nouns: tuple[str, ...]
    other: bool = False  # abnormal, but none of the specific labels: any_abnormality only


SLOTS: dict[str, tuple[str, ...]] = {
    "side": ("left", "right", "left", "right", "L", "R", "left-sided", "right-sided"),
    "lobe": ("frontal", "parietal", "temporal", "occipital", "frontoparietal", "temporoparietal", "parieto-occipital"),
    "deep": ("basal ganglia", "thalamus", "internal capsule", "putamen", "caudate head", "corona radiata",
             "external capsule"),
    "artery": ("left MCA bifurcation", "right MCA bifurcation", "anterior communicating artery",
               "left posterior communicating artery", "right PCOM", "basilar tip", "left ICA terminus",
               "right supraclinoid ICA", "ACOM"),
    "territory": ("MCA", "PCA", "ACA", "PICA", "left MCA", "right MCA", "middle cerebral artery",
                  "posterior cerebral artery", "watershed"),
    "size": ("small", "moderate", "large", "tiny", "moderate-sized", "sizeable", "small volume"),
    "mm": ("3", "4", "5", "6", "7", "8", "9", "10", "12", "14", "15", "18"),
    "cm": ("0.8", "1.2", "1.5", "2.1", "2.4", "3.0", "3.5", "4.2", "1.1 x 0.9", "2.3 x 1.8", "3.1 x 2.7"),
    "sinus": ("left transverse sinus", "right transverse sinus", "superior sagittal sinus", "left sigmoid sinus",
              "straight sinus", "right transverse and sigmoid sinuses"),
    "fazekas": ("1", "2", "3", "2", "1-2", "2-3"),
    "region": ("frontal", "periventricular", "deep", "subcortical", "centrum semiovale", "bifrontal",
               "parietal", "bilateral cerebral"),
    "shift": ("2", "3", "4", "5", "6", "7", "9"),
}


def _c(key: str, labels: tuple[str, ...], modality: str, acute: bool, present: tuple[str, ...],
       short: tuple[str, ...], nouns: tuple[str, ...], other: bool = False) -> Concept:
    return Concept(key, labels, modality, acute, present, short, nouns, other)


CONCEPTS: tuple[Concept, ...] = (
    _c("sdh", ("subdural",), "any", True, (
        "Acute subdural hematoma over the {side} cerebral convexity measuring {mm} mm in maximal thickness.",
        "There is a {size} {side} holohemispheric subdural hematoma, {mm} mm thick, with {shift} mm of midline shift.",
        "Crescentic hyperdense extra-axial collection along the {side} convexity consistent with acute subdural hemorrhage.",
        "Mixed density {side} subdural collection compatible with acute-on-chronic subdural hematoma.",
        "Chronic {side} subdural hematoma measuring up to {mm} mm.",
        "Thin {side} tentorial subdural hematoma.",
        "Small acute SDH along the falx.",
        "{side} frontoparietal SDH, max depth {mm}mm.",
        "A {size} subdural collection is present over the {side} hemisphere, likely subacute subdural blood.",
        "Subdural haematoma overlying the {side} {lobe} lobe, {mm} mm.",
        "Bilateral chronic subdural hematomas, larger on the {side}.",
        "Extra-axial blood layering along the {side} tentorium and falx, subdural in location.",
        "T1 hyperintense {side} subdural collection in keeping with subacute subdural hematoma.",
        "Hypodense {side} subdural collection measuring {mm} mm, consistent with a chronic subdural hematoma.",
        "There is a {side} convexity subdural hematoma with local mass effect on the adjacent gyri.",
        "Residual {side} subdural collection following evacuation, {mm} mm.",
        "{side} subdural hematoma with local mass effect and effacement of the {side} lateral ventricle.",
    ), (
        "Acute {side} subdural hematoma.", "{side} SDH with {shift} mm midline shift.", "Chronic {side} SDH.",
        "Subdural hematoma as described.", "Acute-on-chronic {side} subdural.", "Small {side} SDH.",
    ), ("subdural hematoma", "subdural hemorrhage", "SDH", "subdural collection", "subdural blood", "subdural",
        "subdural haematoma")),
    _c("edh", ("epidural",), "any", True, (
        "Biconvex hyperdense extra-axial collection over the {side} {lobe} convexity consistent with an epidural hematoma.",
        "Acute {side} {lobe} epidural hematoma measuring {mm} mm in thickness, with an overlying fracture.",
        "{size} extradural haematoma {side} temporal, {mm} mm.",
        "Lentiform extra-axial hematoma in the {side} temporal region, in keeping with EDH.",
        "There is an acute epidural hematoma in the posterior fossa on the {side}.",
        "Small {side} frontal EDH.",
        "Extra-axial hematoma with a convex inner margin over the {side} parietal bone, not crossing sutures, epidural.",
    ), (
        "Acute {side} epidural hematoma.", "{side} EDH.", "Extradural haematoma {side} {lobe}.",
    ), ("epidural hematoma", "EDH", "extradural hematoma", "epidural hemorrhage", "extradural collection",
        "epidural collection")),
    _c("sah", ("subarachnoid",), "any", True, (
        "Subarachnoid hemorrhage within the basal cisterns and both sylvian fissures.",
        "Small volume subarachnoid hemorrhage in the {side} {lobe} sulci.",
        "Hyperdensity in the {side} sylvian fissure and interhemispheric fissure consistent with SAH.",
        "Traumatic subarachnoid haemorrhage in the {side} frontal sulci.",
        "Diffuse SAH, Fisher grade 3.",
        "Trace subarachnoid blood in the {side} parietal convexity sulci.",
        "FLAIR sulcal hyperintensity in the {side} {lobe} lobe in keeping with subarachnoid blood.",
        "Blood in the prepontine and ambient cisterns.",
        "Sulcal hyperdensity over the {side} convexity, representing convexity subarachnoid hemorrhage.",
        "Acute blood in the interpeduncular cistern and along the tentorium (subarachnoid).",
        "There is subarachnoid hemorrhage layering in the {side} {lobe} sulci with no underlying contusion.",
    ), (
        "Subarachnoid hemorrhage.", "Diffuse SAH.", "Small volume traumatic SAH.", "Convexity SAH {side}.",
    ), ("subarachnoid hemorrhage", "SAH", "subarachnoid blood", "subarachnoid haemorrhage", "sulcal blood")),
    _c("ivh", ("intraventricular",), "any", True, (
        "Intraventricular extension with blood layering in the occipital horns.",
        "Blood layering dependently in the {side} occipital horn.",
        "Intraventricular hemorrhage within the third and fourth ventricles.",
        "Small IVH in the {side} lateral ventricle.",
        "Hyperdense blood products fill the {side} lateral ventricle (intraventricular haemorrhage).",
        "There is a small amount of intraventricular blood.",
        "Blood-fluid level in the occipital horns of the lateral ventricles.",
        "Hemorrhage extends into the {side} lateral ventricle.",
    ), (
        "Intraventricular hemorrhage.", "IVH.", "Intraventricular extension.",
    ), ("intraventricular hemorrhage", "IVH", "intraventricular blood", "intraventricular extension",
        "blood in the ventricles")),
    _c("iph", ("intraparenchymal",), "any", True, (
        "{size} intraparenchymal hematoma in the {side} {deep}, measuring {cm} cm, with surrounding edema.",
        "Acute lobar hemorrhage in the {side} {lobe} lobe measuring {cm} cm.",
        "Hemorrhagic contusions in the {side} {lobe} lobe.",
        "There is a {cm} cm parenchymal haematoma centred in the {side} {deep}.",
        "Acute intracerebral hemorrhage in the {side} {deep}.",
        "Small focus of parenchymal hemorrhage in the {side} cerebellar hemisphere.",
        "Intraparenchymal bleed {side} {deep}, volume approximately 15 mL.",
        "Rounded hyperdense hematoma in the {side} cerebellar hemisphere with mild effacement of the fourth ventricle.",
        "Acute hematoma in the {side} {lobe} lobe with a rim of edema.",
        "{side} {lobe} hematoma with mass effect on the {side} lateral ventricle.",
    ), (
        "Acute {side} {deep} hemorrhage.", "{side} {lobe} intraparenchymal hematoma.", "Hemorrhagic contusions.",
        "Intracerebral haemorrhage {side} {deep}.",
    ), ("intraparenchymal hemorrhage", "parenchymal hematoma", "intracerebral hemorrhage", "IPH",
        "intraparenchymal hematoma", "contusion", "parenchymal hemorrhage", "hemorrhagic contusion")),
    _c("stroke_ct", ("acute_stroke",), "CT", True, (
        "Loss of grey-white matter differentiation in the {side} insular ribbon and lentiform nucleus, consistent with acute infarction.",
        "Hyperdense {side} MCA sign with early ischemic changes in the {side} MCA territory.",
        "Hypodensity with sulcal effacement in the {side} {territory} territory in keeping with acute infarct.",
        "Evolving acute infarct in the {side} {lobe} lobe.",
        "Acute lacunar infarct in the {side} {deep}.",
        "ASPECTS 7 with early ischaemic change in the {side} MCA territory.",
        "New area of hypoattenuation in the {side} cerebellar hemisphere compatible with acute PICA infarct.",
        "Subacute infarct in the {side} {territory} territory.",
        "Wedge-shaped cortical and subcortical hypodensity in the {side} {lobe} lobe, compatible with a recent infarct.",
        "Cytotoxic oedema in the {side} {territory} territory with effacement of the adjacent sulci, acute infarction.",
    ), (
        "Acute {side} {territory} infarct.", "Acute ischemic stroke, {side} {territory} territory.",
        "Early ischaemic change {side} MCA territory.", "Subacute {side} {lobe} infarct.",
    ), ("acute infarct", "acute infarction", "acute ischemia", "acute territorial infarct", "acute stroke",
        "early ischemic change", "acute ischemic change", "acute CVA", "new infarct")),
    _c("stroke_mr", ("acute_stroke",), "MR", True, (
        "Restricted diffusion in the {side} {territory} territory with corresponding low ADC, consistent with acute infarct.",
        "Multiple foci of restricted diffusion in the {side} {lobe} lobe in keeping with acute embolic infarcts.",
        "Acute lacunar infarct in the {side} {deep} with restricted diffusion.",
        "DWI hyperintensity with ADC correlate in the {side} cerebellar hemisphere: acute infarct.",
        "Acute infarct involving the {side} {lobe} cortex and subcortical white matter.",
        "Small acute infarcts in both cerebral hemispheres, suggesting a central embolic source.",
        "Cortical diffusion restriction in the {side} {lobe} lobe compatible with recent ischaemia.",
    ), (
        "Acute {side} {territory} infarct.", "Acute embolic infarcts.", "Acute lacunar infarct {side} {deep}.",
        "Acute ischaemic stroke.",
    ), ("acute infarct", "restricted diffusion", "acute ischemia", "diffusion restriction", "acute stroke",
        "acute infarction", "new infarct")),
    _c("transformation", ("acute_stroke", "intraparenchymal"), "any", True, (
        "Hemorrhagic transformation of the {side} {territory} territory infarct.",
        "Acute infarct in the {side} {lobe} lobe with petechial hemorrhage within it.",
        "Parenchymal hematoma within the recent {side} {territory} infarct (hemorrhagic transformation).",
    ), (
        "{side} {territory} infarct with hemorrhagic transformation.", "Hemorrhagic transformation of the infarct.",
    ), ("hemorrhagic transformation", "hemorrhagic conversion")),
    _c("mass", ("mass",), "any", False, (
        "{size} extra-axial mass along the {side} {lobe} convexity measuring {cm} cm, consistent with a meningioma.",
        "Heterogeneously enhancing intra-axial mass in the {side} {lobe} lobe with surrounding vasogenic edema, suspicious for high-grade glioma.",
        "Multiple ring-enhancing lesions at the grey-white junction, most likely metastases.",
        "Enhancing mass in the {side} cerebellopontine angle extending into the internal auditory canal, consistent with vestibular schwannoma.",
        "Sellar and suprasellar mass measuring {cm} cm, compatible with pituitary macroadenoma.",
        "There is a {cm} cm space-occupying lesion in the {side} {lobe} lobe with mass effect.",
        "Calcified dural-based lesion along the falx, in keeping with meningioma.",
        "Hypodense mass in the {side} {lobe} lobe with vasogenic oedema, likely neoplastic.",
        "Non-enhancing T2 hyperintense infiltrative lesion in the {side} {lobe} lobe, likely low-grade glioma.",
        "{side} {lobe} tumour with midline shift of {shift} mm.",
        "A necrotic rim-enhancing lesion in the {side} {lobe} lobe with extensive surrounding oedema, likely neoplastic.",
        "Dural-based extra-axial lesion with homogeneous enhancement and a dural tail over the {side} convexity, meningioma.",
        "Multiple enhancing nodules in both hemispheres with perilesional oedema, in keeping with metastatic disease.",
        "Mass in the posterior fossa effacing the fourth ventricle, with obstructive hydrocephalus.",
        "Intraventricular mass in the {side} lateral ventricle, likely a central neurocytoma or meningioma.",
    ), (
        "{side} {lobe} mass, likely glioma.", "Meningioma.", "Cerebral metastases.", "Vestibular schwannoma.",
        "Intracranial mass lesion.", "Pituitary macroadenoma.",
    ), ("mass", "mass lesion", "intracranial mass", "space-occupying lesion", "SOL", "neoplasm", "tumour",
        "tumor", "metastatic disease", "enhancing lesion", "intracranial neoplasm")),
    _c("atrophy", ("atrophy",), "any", False, (
        "Generalised cerebral volume loss, more than expected for age.",
        "Moderate diffuse cerebral and cerebellar atrophy.",
        "Mild global atrophy with prominence of the sulci and ventricles.",
        "Disproportionate bilateral hippocampal atrophy.",
        "Prominent sulci and ventricles consistent with generalized volume loss.",
        "Frontal and temporal predominant atrophy.",
        "Mild age-related volume loss.",
        "Cerebral atrophy.",
        "Prominence of the ventricles and sulci, in keeping with generalized volume loss.",
        "Moderate generalized atrophy.",
        "Bilateral medial temporal lobe volume loss.",
    ), (
        "Cerebral atrophy.",
        "Prominence of the ventricles and sulci, in keeping with generalized volume loss.",
        "Moderate generalized atrophy.",
        "Bilateral medial temporal lobe volume loss.", "Generalised volume loss.", "Hippocampal atrophy.", "Global atrophy.",
    ), ("atrophy", "volume loss", "cerebral atrophy", "hippocampal atrophy")),
    _c("vascular", ("vascular",), "any", False, (
        "{mm} mm saccular aneurysm arising from the {artery}.",
        "Arteriovenous malformation in the {side} {lobe} lobe with a nidus of {cm} cm and enlarged draining veins.",
        "Filling defect in the {sinus} consistent with venous sinus thrombosis.",
        "Occlusion of the {side} M1 segment.",
        "Developmental venous anomaly in the {side} {lobe} lobe.",
        "Cavernous malformation in the {side} {lobe} lobe with a hemosiderin rim.",
        "Dissection of the {side} vertebral artery with a short segment of luminal narrowing.",
        "Dural arteriovenous fistula with cortical venous reflux.",
        "Severe stenosis of the {side} cavernous ICA.",
        "Hyperdense {sinus} compatible with dural venous sinus thrombosis.",
        "Fusiform aneurysmal dilatation of the basilar artery.",
        "Absent flow void in the {side} internal carotid artery, suggesting occlusion.",
        "Tortuous dilated vessels with a nidus in the {side} {lobe} lobe, in keeping with an AVM.",
        "Intimal flap and tapered narrowing of the {side} internal carotid artery, consistent with dissection.",
    ), (
        "{artery} aneurysm.", "{side} {lobe} AVM.", "Venous sinus thrombosis of the {sinus}.", "{side} M1 occlusion.",
        "Developmental venous anomaly.", "Cavernoma.",
    ), ("aneurysm", "vascular malformation", "AVM", "venous sinus thrombosis", "CVST", "large vessel occlusion",
        "dissection", "arteriovenous malformation", "vascular abnormality", "dural venous sinus thrombosis")),
    _c("svd_ct", ("small_vessel_disease",), "CT", False, (
        "Periventricular and deep white matter hypodensities, consistent with chronic small vessel ischemic disease.",
        "Patchy low attenuation in the periventricular white matter, likely microangiopathic.",
        "Chronic microvascular ischemic change.",
        "Old lacunar infarcts in the {side} {deep} and bilateral periventricular white matter low density.",
        "Moderate small vessel disease.",
        "Confluent periventricular white matter hypoattenuation in keeping with leukoaraiosis.",
        "Extensive periventricular white matter low density, chronic microvascular ischaemic change.",
    ), (
        "Chronic small vessel ischemic disease.", "Small vessel disease.", "Chronic microangiopathic change.",
        "Leukoaraiosis.",
    ), ("small vessel disease", "microangiopathic change", "white matter disease", "leukoaraiosis",
        "small vessel ischemic change", "chronic microvascular change")),
    _c("svd_mr", ("small_vessel_disease",), "MR", False, (
        "Scattered T2/FLAIR hyperintensities in the {region} white matter, likely microangiopathic (Fazekas {fazekas}).",
        "Confluent periventricular FLAIR hyperintensity, Fazekas grade {fazekas}, consistent with small vessel disease.",
        "Several punctate FLAIR hyperintense foci in the subcortical white matter, nonspecific but most likely chronic small vessel ischemic change.",
        "Chronic lacunes in the {side} {deep}.",
        "White matter hyperintensities of presumed vascular origin (Fazekas {fazekas}).",
        "Patchy deep and periventricular white matter T2 hyperintensity compatible with small vessel ischaemic change.",
    ), (
        "Small vessel disease, Fazekas {fazekas}.", "Chronic microvascular ischemic change.",
        "White matter hyperintensities of presumed vascular origin.",
    ), ("small vessel disease", "white matter hyperintensities", "microangiopathic change", "chronic lacunes",
        "small vessel ischemic change")),
    _c("demyelination", ("white_matter_inflammation",), "MR", False, (
        "Multiple ovoid periventricular T2 hyperintense lesions oriented perpendicular to the corpus callosum, consistent with demyelination.",
        "Juxtacortical, periventricular and infratentorial lesions, compatible with multiple sclerosis.",
        "An enhancing lesion in the {side} centrum semiovale indicates active demyelination.",
        "New T2 lesions in the {side} periventricular white matter since the prior study, in keeping with active demyelinating disease.",
        "Large confluent white matter lesions with incomplete ring enhancement, suggesting tumefactive demyelination.",
        "Bilateral asymmetric white matter lesions in keeping with ADEM.",
        "Multifocal white matter and deep grey matter lesions, in keeping with acute disseminated encephalomyelitis.",
        "Periventricular lesions typical of MS, with a few new lesions.",
        "Several white matter lesions with open-ring enhancement, compatible with active demyelination.",
    ), (
        "Demyelinating disease.", "Active demyelination.", "Multiple sclerosis with new lesions.",
        "Findings in keeping with MS.",
    ), ("demyelination", "demyelinating disease", "MS plaques", "active demyelination", "demyelinating lesions",
        "inflammatory white matter lesions", "new demyelinating lesions")),
    _c("encephalomalacia", ("encephalomalacia",), "any", False, (
        "Encephalomalacia in the {side} {lobe} lobe from a remote infarct.",
        "Old {side} {territory} territory infarct with gliosis and ex vacuo dilatation of the {side} lateral ventricle.",
        "Chronic infarct in the {side} cerebellar hemisphere.",
        "Post-traumatic encephalomalacia of the {side} frontal pole.",
        "Porencephalic cavity in the {side} {lobe} lobe.",
        "Established infarct {side} {lobe} lobe.",
        "Gliosis and volume loss at the site of the old {side} {deep} hemorrhage.",
        "Focal encephalomalacia related to previous {side} {lobe} craniotomy.",
        "Old infarct in the {side} {territory} territory with cystic encephalomalacia.",
        "Chronic {side} {lobe} infarct with gliosis and volume loss.",
    ), (
        "Old {side} {territory} infarct.", "Encephalomalacia {side} {lobe}.", "Chronic {side} {lobe} infarct.",
    ), ("encephalomalacia", "established infarct", "old infarct", "chronic infarct", "gliosis")),
    _c("sih", ("sih",), "MR", False, (
        "Diffuse smooth pachymeningeal enhancement, engorged venous sinuses and sagging of the brainstem, consistent with spontaneous intracranial hypotension.",
        "Brain sag with effacement of the prepontine cistern, pituitary engorgement and dural enhancement; appearances suggest intracranial hypotension.",
        "Smooth diffuse dural thickening and enhancement with a venous distension sign, in keeping with SIH.",
        "Features of intracranial hypotension (Bern score 7).",
        "Bilateral subdural effusions, pachymeningeal enhancement and descent of the cerebellar tonsils, compatible with CSF leak / intracranial hypotension.",
        "Diffuse dural enhancement, distended dural venous sinuses and an enlarged pituitary gland; intracranial hypotension.",
    ), (
        "Spontaneous intracranial hypotension.", "Findings of intracranial hypotension.", "SIH.",
    ), ("intracranial hypotension", "SIH", "pachymeningeal enhancement", "brain sag",
        "features of intracranial hypotension", "CSF leak", "dural enhancement")),
    _c("microbleeds", ("microbleeds",), "MR", False, (
        "Multiple foci of susceptibility on SWI in the {region} lobes, consistent with cerebral microbleeds.",
        "Several lobar microhaemorrhages, in a pattern suggestive of cerebral amyloid angiopathy.",
        "Scattered microbleeds in the basal ganglia, thalami and pons, hypertensive pattern.",
        "A single cortical microbleed in the {side} {lobe} lobe.",
        "Numerous punctate blooming foci on SWI, compatible with microhemorrhages.",
        "Two microbleeds in the {side} {deep}.",
        "Punctate foci of signal loss on SWI in the {side} {lobe} cortex, microhemorrhages.",
    ), (
        "Cerebral microbleeds.", "Lobar microbleeds, likely amyloid angiopathy.", "Microhemorrhages.",
    ), ("microbleeds", "microhemorrhages", "cerebral microbleeds", "susceptibility foci", "blooming foci",
        "CMBs", "microhaemorrhages")),
    _c("hydrocephalus", (), "any", True, (
        "Dilatation of the lateral and third ventricles out of proportion to the sulci, consistent with hydrocephalus.",
        "Obstructive hydrocephalus with transependymal edema.",
        "Communicating hydrocephalus.",
    ), ("Hydrocephalus.", "Obstructive hydrocephalus."), ("hydrocephalus", "ventricular enlargement"), other=True),
    _c("fracture", (), "CT", True, (
        "Nondisplaced fracture of the {side} {lobe} bone.",
        "Depressed skull fracture involving the {side} {lobe} bone.",
        "Fracture through the {side} temporal bone.",
    ), ("{side} skull fracture.", "Skull fracture."), ("skull fracture", "calvarial fracture", "fracture"), other=True),
    _c("cyst", (), "any", False, (
        "Arachnoid cyst in the {side} middle cranial fossa.",
        "Small colloid cyst at the foramen of Monro without hydrocephalus.",
        "Cerebellar tonsillar ectopia of {mm} mm below the foramen magnum, consistent with Chiari I malformation.",
        "Edema in the {side} {lobe} lobe.",
    ), ("Arachnoid cyst.", "Chiari I malformation.", "Colloid cyst."), ("cyst", "Chiari malformation", "edema"),
        other=True),
    _c("variant", (), "any", False, (
        "Cavum septum pellucidum, a normal variant.",
        "Mega cisterna magna.",
        "Physiological calcification of the pineal gland and choroid plexus.",
        "Mucosal thickening in the {side} maxillary sinus.",
        "Prominent perivascular spaces in the basal ganglia.",
        "Partial opacification of the {side} mastoid air cells.",
    ), ("Incidental normal variant.",), ("variant",)),
)

BY_KEY = {c.key: c for c in CONCEPTS}

# sentences that describe normal anatomy, by modality, each with the concepts it would contradict
_PARENCHYMA = ("stroke_ct", "iph", "mass", "svd_ct", "encephalomalacia", "cyst")
_ALL = tuple(c.key for c in CONCEPTS if c.key != "variant")
NORMAL: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "any": (
        ("The ventricles and sulci are normal in size and configuration.", ("atrophy", "hydrocephalus", "ivh")),
        ("Ventricles are normal in size.", ("hydrocephalus",)),
        ("The basal cisterns are patent.", ("sah", "sih")),
        ("Brain volume is appropriate for age.", ("atrophy",)),
        ("Age-appropriate cerebral volume.", ("atrophy",)),
        ("No midline shift.", ("sdh", "edh", "mass", "iph")),
        ("There is no midline shift or mass effect.", ("sdh", "edh", "mass", "iph")),
        ("No extra-axial collection.", ("sdh", "edh", "sih", "mass")),
        ("No hydrocephalus.", ("hydrocephalus",)),
        ("The visualised paranasal sinuses and mastoid air cells are clear.", ("variant",)),
        ("The orbits are unremarkable.", ()),
        ("The posterior fossa structures are normal.", ("stroke_ct", "stroke_mr", "sih", "cyst")),
        ("Normal appearance of the brainstem and cerebellum.", ("stroke_ct", "stroke_mr", "sih", "cyst")),
        ("The calvarium is intact.", ("fracture",)),
        ("The craniocervical junction is normal.", ("sih", "cyst")),
        ("Midline structures are central.", ("sdh", "edh", "mass", "iph")),
        ("No abnormality of the skull base.", ("fracture",)),
        ("Pituitary gland is normal in size.", ("mass", "sih")),
        ("The brain parenchyma, ventricles and extra-axial spaces are unremarkable.", _ALL),
        ("The cerebellar tonsils are normally positioned.", ("sih", "cyst")),
        ("The major intracranial arteries are patent.", ("vascular",)),
        ("The dural venous sinuses are patent.", ("vascular",)),
        ("Hypoplastic left transverse sinus, a normal variant.", ("vascular",)),
        ("Fetal origin of the right posterior cerebral artery, a normal variant.", ()),
        ("Arachnoid granulation in the right transverse sinus.", ("vascular",)),
        ("The sella and parasellar regions are unremarkable.", ("mass",)),
        ("The internal auditory canals are normal.", ("mass",)),
        ("The globes and optic nerves are unremarkable.", ()),
        ("Sulci and cisterns are normal for age.", ("atrophy", "sah")),
        ("The corpus callosum is intact.", ("demyelination", "mass")),
        ("The brainstem is normal in morphology and signal.", ("stroke_mr", "sih", "demyelination")),
        ("Vascular calcification of the carotid siphons.", ()),
        ("Atherosclerotic calcification of the intracranial internal carotid arteries.", ()),
        ("Scalp soft tissues are unremarkable.", ()),
        ("Small left frontal scalp haematoma without underlying fracture.", ("fracture",)),
        ("Postoperative changes of a right frontal burr hole.", ()),
        ("The ventricles are stable in size.", ("hydrocephalus", "ivh", "atrophy")),
        ("Stable appearance of the brain compared with the prior examination.", _ALL),
        ("No change since the prior study.", _ALL),
        ("Unchanged appearance of the ventricles and sulci.", ("hydrocephalus", "ivh", "atrophy")),
        ("The ventricles remain normal in size.", ("hydrocephalus", "ivh", "atrophy")),
    ),
    "CT": (
        ("Grey-white matter differentiation is preserved.", ("stroke_ct",)),
        ("Normal grey-white matter differentiation.", ("stroke_ct",)),
        ("No skull fracture.", ("fracture",)),
        ("No focal parenchymal density abnormality.", _PARENCHYMA),
        ("No abnormal intracranial calcification.", ("mass",)),
        ("The bone windows show no fracture.", ("fracture",)),
    ),
    "MR": (
        ("No restricted diffusion.", ("stroke_mr",)),
        ("No abnormal enhancement.", ("mass", "demyelination", "sih", "vascular")),
        ("Normal flow voids in the major intracranial vessels.", ("vascular",)),
        ("No abnormal susceptibility artefact.", ("microbleeds", "iph", "sdh", "sah", "vascular")),
        ("No abnormal signal in the brain parenchyma.", ("svd_mr", "demyelination", "stroke_mr", "mass",
                                                          "encephalomalacia", "iph", "cyst")),
        ("The white matter is normal in signal.", ("svd_mr", "demyelination")),
        ("A few scattered white matter hyperintensities, within normal limits for age.", ("svd_mr", "demyelination")),
        ("Minimal white matter signal change, appropriate for age.", ("svd_mr", "demyelination")),
        ("Normal appearance of the dura.", ("sih", "sdh", "edh")),
        ("No pachymeningeal enhancement.", ("sih",)),
        ("Normal enhancement of the dural venous sinuses.", ("vascular", "sih")),
        ("No abnormal signal on the susceptibility-weighted images.", ("microbleeds", "iph", "sdh", "sah", "vascular")),
        ("Diffusion-weighted images are normal.", ("stroke_mr",)),
        ("Normal FLAIR signal throughout.", ("svd_mr", "demyelination", "stroke_mr", "sah", "mass")),
        ("The optic chiasm and pituitary stalk are normal.", ("mass", "sih")),
        ("Dural venous sinuses show normal flow-related signal.", ("vascular", "sih")),
    ),
}
# sentences any report may hold: communication, quality, recommendations (no label, contradict nothing)
FILLER = (
    "Findings were discussed with the referring clinician at 14:20.",
    "Critical result communicated to the emergency department physician by telephone.",
    "Motion artefact limits assessment of the posterior fossa.",
    "Streak artefact from dental amalgam.",
    "Clinical correlation is recommended.",
    "Follow-up imaging as clinically indicated.",
    "Images reviewed on PACS with the previous examination.",
    "Limited study due to patient movement.",
    "Recommend MRI for further characterisation if clinically indicated.",
    "Report discussed with the neurology team.",
    "Dose report archived.",
    "This report was dictated using voice recognition software.",
    "Please see separate report for the cervical spine.",
    "Beam hardening artefact in the posterior fossa.",
    "Correlation with the clinical examination is advised.",
)
# anatomy stated normal, with the concepts that such a statement would contradict
STRUCTURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("basal cisterns", ("sah", "sih")), ("prepontine cistern", ("sah", "sih")),
    ("lateral ventricles", ("ivh", "hydrocephalus", "atrophy")), ("fourth ventricle", ("ivh", "hydrocephalus")),
    ("third ventricle", ("ivh", "hydrocephalus")), ("sylvian fissures", ("sah", "atrophy")),
    ("extra-axial spaces", ("sdh", "edh", "sah", "sih")), ("cerebellopontine angles", ("mass",)),
    ("dural venous sinuses", ("vascular", "sih")), ("major intracranial arteries", ("vascular",)),
    ("pituitary gland", ("mass", "sih")), ("corpus callosum", ("demyelination", "mass")),
    ("brainstem", ("stroke_ct", "stroke_mr", "sih", "demyelination", "microbleeds")),
    ("cerebellum", ("stroke_ct", "stroke_mr", "encephalomalacia")), ("basal ganglia", ("iph", "svd_ct", "svd_mr")),
    ("thalami", ("iph", "svd_ct", "svd_mr", "microbleeds")), ("cerebral cortex", ("stroke_ct", "stroke_mr")),
    ("white matter", ("svd_ct", "svd_mr", "demyelination")), ("sulci", ("sah", "atrophy")),
    ("dura", ("sih", "sdh", "edh")), ("meninges", ("sih",)), ("skull base", ("fracture",)),
    ("calvarium", ("fracture",)), ("orbits", ()), ("mastoid air cells", ("variant",)),
    ("brain parenchyma", _ALL), ("ventricular system", ("ivh", "hydrocephalus", "atrophy")),
    ("cerebral hemispheres", _ALL), ("posterior fossa", ("stroke_ct", "stroke_mr", "sih", "cyst", "mass")),
)
NORMAL_PREDICATES = ("{S}: normal.", "The {s} are unremarkable.", "{S} appear normal.", "{S}: unremarkable.",
                     "The {s} are within normal limits.", "Normal {s}.", "{S}: no abnormality.",
                     "The {s} are normal in appearance.", "{S}: within normal limits.")

SUBHEADS = {
    "sdh": "Extra-axial spaces", "edh": "Extra-axial spaces", "sah": "Extra-axial spaces", "sih": "Meninges",
    "ivh": "Ventricles", "hydrocephalus": "Ventricles", "vascular": "Vessels", "fracture": "Bones",
    "variant": "Other", "atrophy": "Brain volume",
}

NEGATIONS = (
    "No {n}.", "No evidence of {n}.", "There is no {n}.", "No {n} is seen.", "{N} is not seen.",
    "No {n} identified.", "Negative for {n}.", "No definite {n}.", "{N}: none.", "No sign of {n}.",
    "There is no evidence of {n}.", "{N} is not identified.", "Nil {n}.", "No convincing {n}.",
    "{N} not demonstrated.", "Without evidence of {n}.", "No features of {n}.", "No {n} or mass effect.",
    "{N} is absent.", "No {n} is demonstrated.", "No CT evidence of {n}.",
)
LIST_NEGATIONS = (
    "No {a}, {b} or {c}.", "No evidence of {a}, {b}, or {c}.", "There is no {a}, {b} or {c}.",
    "No {a} or {b}.", "Negative for {a} and {b}.", "{A}, {b} and {c} are not seen.", "No {a}/{b}.",
)
UNCERTAIN = (
    "{N} cannot be excluded.", "Possible tiny {n}.", "Questionable {n}.", "Cannot exclude a small {n}.",
    "A tiny {n} is not entirely excluded.", "Equivocal for {n}.", "?{n}.", "Possibly a small {n}.",
    "Subtle finding that may represent {n}; correlate clinically.", "Cannot rule out {n}.",
    "Query {n}.", "{N} is not excluded.", "Suspected small {n}, not confirmed.",
)
PROBABLE = (
    "Findings consistent with {n}.", "Likely {n}.", "Probable {n}.", "Appearances suspicious for {n}.",
    "Findings in keeping with {n}.", "Appearances are compatible with {n}.", "Features suggestive of {n}.",
)
HISTORY = (
    "Rule out {n}.", "?{n}.", "r/o {n}.", "Query {n}.", "History of {n}.", "Known {n}, follow-up.",
    "Assess for {n}.", "Evaluate for {n}.", "To exclude {n}.", "Suspected {n}.", "Previous {n}.",
    "Concern for {n}.", "Hx {n}.", "Clinical suspicion of {n}.",
)
RESOLVED = (
    "Previously seen {n} has resolved.", "Interval resolution of the {n}.",
    "The {n} seen on the prior study is no longer visible.", "Resolved {n}.", "No residual {n}.",
    "Complete resolution of the previously noted {n}.", "The previously demonstrated {n} is no longer seen.",
    "The {n} has resolved since the prior examination.",
)
PERSISTENT = (
    "Stable {n}.", "Previously seen {n} is again noted, slightly smaller.", "Interval decrease in size of the {n}.",
    "Unchanged {n}.", "No change in the {n}.", "The {n} is similar in size to the prior study.",
    "Redemonstrated {n}.", "Persistent {n}, decreasing in size.", "Known {n}, unchanged.",
    "The {n} has increased in size since the prior study.", "No significant change in the {n}.",
)
NORMAL_IMPRESSIONS = {
    "any": (
        "No acute intracranial abnormality.", "Normal study.", "No acute intracranial pathology.",
        "Unremarkable examination.", "No significant intracranial abnormality.", "No acute findings.",
        "Normal appearances.", "No intracranial abnormality detected.",
    ),
    "CT": ("Normal CT head.", "No acute intracranial hemorrhage or territorial infarct.", "Normal non-contrast CT brain."),
    "MR": ("Normal MRI brain.", "No acute infarct or other intracranial abnormality.", "Normal MR brain with contrast."),
}
NO_ACUTE = (
    "No acute intracranial abnormality.", "No acute intracranial hemorrhage.", "No acute findings.",
    "No acute intracranial process.",
)
NO_OTHER = ("No other acute abnormality.", "No other intracranial abnormality.", "Otherwise normal.",
            "No other significant finding.")
HISTORIES = (
    "Headache.", "Fall.", "Fall on anticoagulation.", "Confusion.", "Head injury.", "Syncope.", "Seizure.",
    "Dizziness.", "Right-sided weakness.", "Left facial droop.", "Worst headache of life.", "Memory loss.",
    "Follow-up.", "Postural headache.", "Visual disturbance.", "Altered mental status.", "Trauma, GCS 14.",
    "Numbness and tingling.", "Vertigo.", "Known malignancy, staging.", "Cognitive decline.", "Aphasia.",
    "Motor vehicle collision.", "Hypertension, sudden onset headache.", "Orthostatic headache.",
)
TITLES = {
    "CT": ("CT HEAD WITHOUT CONTRAST", "CT Head", "CT BRAIN NON-CONTRAST", "Non-contrast CT head", "CT HEAD",
           "CT head (non-contrast)", "CTH"),
    "MR": ("MRI BRAIN WITH AND WITHOUT CONTRAST", "MRI Brain", "MR BRAIN", "MRI head with gadolinium", "MR Brain",
           "MRI brain without contrast", "MRI BRAIN"),
}
TECHNIQUES = {
    "CT": ("Axial images of the head were obtained without intravenous contrast.",
           "Non-contrast axial CT of the head with coronal and sagittal reformats.",
           "Helical CT from skull base to vertex, no IV contrast.", "Standard non-contrast protocol."),
    "MR": ("Multiplanar multisequence MRI of the brain before and after gadolinium.",
           "Sagittal T1, axial T2, FLAIR, DWI, SWI and post-contrast T1 images.",
           "Routine brain protocol including diffusion and susceptibility-weighted imaging.",
           "Axial DWI, FLAIR, T2, SWI; 3D T1 post contrast."),
}
COMPARISONS = ("None.", "None available.", "CT head from 3 months prior.", "Prior MRI brain.", "CT dated 02/03/2023.",
               "Previous study from last year.", "CT head earlier today.", "MRI 6 weeks ago.", "No prior imaging.")
